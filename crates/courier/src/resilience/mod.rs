//! Surviving failures: of connections, of instances, of the registry.
//!
//! - `retry`: when a call may be sent again and where: on a fresh
//!   connection when the server provably never processed it, on the next
//!   instance when nothing was sent (or, for idempotent methods, when the
//!   connection was lost after sending).
//! - [`RetryPolicy`], [`HedgingPolicy`] (`policy`): what a discovered
//!   channel does when an attempt fails or is slow, gRPC's way (gRFC A6).
//! - [`BreakerPolicy`] (`breaker`): circuit breakers over a sliding window
//!   of outcomes, per instance (what ejects a broken or hung instance) and
//!   per method; closed, open, half-open with probes that time out.
//! - `latency`: a method's recent latencies, for an adaptive hedging delay.
//! - [`RetryBudget`] (`budget`): how many retries a client may send, as a
//!   share of its calls, so a total outage is not multiplied by retries.
//! - [`Fallbacks`] (`fallback`): per method, an answer for when a call
//!   fails, and forced degradation switched at run time.
//! - [`Backoff`]: the jittered, growing delay between reconnect attempts
//!   (and the registry clients' retries).

mod backoff;
pub(crate) mod breaker;
mod budget;
pub(crate) mod fallback;
pub(crate) mod latency;
pub(crate) mod policy;
pub(crate) mod retry;
pub(crate) mod striped;
mod ticks;

pub use backoff::Backoff;
pub use breaker::{BreakerPolicy, BreakerState};
pub use budget::RetryBudget;
pub use fallback::{Fallbacks, NoFallback};
pub use policy::{HedgeDelay, HedgingPolicy, PREVIOUS_ATTEMPTS, RETRY_PUSHBACK, RetryPolicy};
