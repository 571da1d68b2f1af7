//! [`Route`]: where a channel's calls go once its layers are done with
//! them, one endpoint or a balanced set, under the call's deadline.

use std::sync::Arc;

use super::balanced::Balanced;
use super::call::{Call, Outcome};
use super::endpoint::Endpoint;
use super::protocols::Transport;
use crate::resilience::retry::AttemptError;
use crate::status::Status;

/// One address in one protocol, or the instances of a discovered service.
#[derive(Clone)]
pub(crate) enum Route {
    One(Transport),
    Balanced(Arc<Balanced>),
}

impl Route {
    /// Send `call` and wait for its outcome, within its deadline: one
    /// deadline covers the whole call, moves between instances and
    /// connecting included.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Outcome {
        let attempt = async {
            // The endpoint's own future, not `Transport::call`'s around it:
            // one state machine fewer to build and poll on the hot path.
            let outcome = match self {
                Route::One(Transport::Native(native)) => {
                    native.call(call).await.map_err(AttemptError::into_status)
                }
                #[cfg(feature = "grpc")]
                Route::One(Transport::Grpc(grpc)) => grpc.call(call).await.map_err(AttemptError::into_status),
                Route::One(Transport::Go(go)) => go.call(call).await.map_err(AttemptError::into_status),
                Route::Balanced(balanced) => balanced.send(call).await,
            };
            outcome.unwrap_or_else(Outcome::from)
        };
        let Some(deadline) = call.deadline else {
            return attempt.await;
        };
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::from(deadline_status(call)),
        }
    }
}

/// The status of a call whose deadline passed.
pub(crate) fn deadline_status(call: &Call<'_>) -> Status {
    Status::deadline_exceeded(match call.timeout {
        Some(timeout) => format!("{} did not complete within its {timeout:?} timeout", call.method),
        None => format!(
            "{} did not complete before the deadline of the call being served, which it inherits",
            call.method
        ),
    })
}
