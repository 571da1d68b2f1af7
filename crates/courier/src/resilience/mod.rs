//! Surviving failures: of connections, of instances, of the registry.
//!
//! - `retry`: when a call may be sent again and where: on a fresh
//!   connection when the server provably never processed it, on the next
//!   instance when nothing was sent (or, for idempotent methods, when the
//!   connection was lost after sending).
//! - `outlier`: passive health checking. An instance whose calls fail to
//!   reach it several times in a row is ejected for a while, then tried
//!   again.
//! - [`RetryBudget`] (`budget`): how many retries a client may send, as a
//!   share of its calls, so a total outage is not multiplied by retries.
//! - [`Fallbacks`] (`fallback`): per method, an answer for when a call
//!   fails, and forced degradation switched at run time.
//! - [`Backoff`]: the jittered, growing delay between reconnect attempts
//!   (and the registry clients' retries).

mod backoff;
mod budget;
pub(crate) mod fallback;
pub(crate) mod outlier;
pub(crate) mod retry;

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use fallback::{Fallbacks, NoFallback};
pub use outlier::Ejection;
