//! What a discovered channel does when an attempt fails or is slow: a
//! [`RetryPolicy`] (gRPC's retry semantics, gRFC A6) or a
//! [`HedgingPolicy`], per service and per method.
//!
//! Whatever the policy, an attempt that provably never reached a server
//! moves to the next instance at once, for every method: that costs the
//! servers nothing. Everything else (retrying a status, a lost connection,
//! an attempt that timed out, sending a hedge) is for idempotent methods
//! only, since the first attempt may have run, and draws on the channel's
//! [`RetryBudget`](super::RetryBudget).

use std::time::Duration;

use crate::status::Code;

/// The metadata key carrying how many attempts of the call came before
/// this one (absent on the first), as gRPC names it.
pub const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// The response metadata key a server sets to push back: retry no sooner
/// than this many milliseconds, or (if negative or not a number) not at
/// all. As gRPC names it; courier's native protocol carries the same key.
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The most attempts any policy makes (gRPC's cap too).
pub(crate) const MAX_ATTEMPTS_CAP: u32 = 5;

/// How to retry failed attempts, gRFC A6's way: up to `max_attempts`
/// attempts in all, with an exponential, fully jittered backoff between
/// them, on the status codes listed; each on another instance where there
/// is one; each within `per_attempt_timeout` if set, and all within the
/// call's deadline.
///
/// ```
/// use std::time::Duration;
/// use courier::Code;
/// use courier::resilience::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(4)
///     .backoff(Duration::from_millis(20), Duration::from_millis(500), 2.0)
///     .retry_on([Code::Unavailable, Code::ResourceExhausted])
///     .per_attempt_timeout(Duration::from_millis(200));
/// # drop(policy);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) multiplier: f64,
    pub(crate) retryable: Vec<Code>,
    pub(crate) per_attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 3 attempts; backoff from up to 25 ms, doubling, at most 1 s;
    /// `Unavailable` is retried (for idempotent methods); no per-attempt
    /// timeout.
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            retryable: vec![Code::Unavailable],
            per_attempt_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// Attempts in all, the first included (1 to 5; default 3).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> RetryPolicy {
        self.max_attempts = attempts.clamp(1, MAX_ATTEMPTS_CAP);
        self
    }

    /// Before retry `n` (from 1), wait a random time up to
    /// `min(initial * multiplier^(n-1), max)`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration, multiplier: f64) -> RetryPolicy {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self.multiplier = if multiplier.is_finite() { multiplier.max(1.0) } else { 2.0 };
        self
    }

    /// The status codes that are retried (default `Unavailable`). A
    /// connection lost mid-call and a per-attempt timeout are retried
    /// whatever this says.
    #[must_use]
    pub fn retry_on(mut self, codes: impl IntoIterator<Item = Code>) -> RetryPolicy {
        self.retryable = codes.into_iter().collect();
        self
    }

    /// Give each attempt at most `timeout`, inside the call's deadline; an
    /// attempt that takes longer is abandoned and retried.
    #[must_use]
    pub fn per_attempt_timeout(mut self, timeout: Duration) -> RetryPolicy {
        self.per_attempt_timeout = Some(timeout);
        self
    }

    /// Never retry anything that may have reached a server.
    pub fn none() -> RetryPolicy {
        RetryPolicy { max_attempts: 1, retryable: Vec::new(), ..RetryPolicy::default() }
    }

    /// Whether `code` is retried.
    pub fn retries(&self, code: Code) -> bool {
        self.retryable.contains(&code)
    }

    /// The backoff before retry `retry` (from 1), with `unit_random`
    /// uniform in `[0, 1)`.
    pub(crate) fn backoff_for(&self, retry: u32, unit_random: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let ceiling = (self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent))
            .min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(ceiling * unit_random.clamp(0.0, 1.0))
    }
}

/// When a hedge goes out.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum HedgeDelay {
    /// After this long without an answer.
    Fixed(Duration),
    /// After the method's recent latency at `percentile` (0.0–1.0, e.g.
    /// 0.95), kept within `[min, max]`; `max` until enough calls are seen.
    Adaptive {
        /// Which latency percentile.
        percentile: f64,
        /// The shortest delay.
        min: Duration,
        /// The longest delay, and the delay before enough calls are seen.
        max: Duration,
    },
}

/// Hedging: for an idempotent method, send another attempt to another
/// instance when the first has not answered after a delay; the first
/// success wins and the others are cancelled. Each hedge draws on the
/// retry budget.
///
/// ```
/// use std::time::Duration;
/// use courier::resilience::{HedgeDelay, HedgingPolicy};
///
/// let fixed = HedgingPolicy::new(HedgeDelay::Fixed(Duration::from_millis(20)));
/// let adaptive = HedgingPolicy::new(HedgeDelay::Adaptive {
///     percentile: 0.95,
///     min: Duration::from_millis(2),
///     max: Duration::from_millis(100),
/// })
/// .max_attempts(3);
/// # drop((fixed, adaptive));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HedgingPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) delay: HedgeDelay,
    pub(crate) non_fatal: Vec<Code>,
}

impl HedgingPolicy {
    /// Up to 2 attempts, the hedge sent after `delay`; an attempt failing
    /// with `Unavailable` sends the next one at once rather than ending
    /// the call.
    pub fn new(delay: HedgeDelay) -> HedgingPolicy {
        HedgingPolicy { max_attempts: 2, delay, non_fatal: vec![Code::Unavailable] }
    }

    /// Attempts in all, the first included (1 to 5; default 2).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> HedgingPolicy {
        self.max_attempts = attempts.clamp(1, MAX_ATTEMPTS_CAP);
        self
    }

    /// Codes after which the next hedge goes out at once and the call goes
    /// on (default `Unavailable`); any other failure ends the call.
    #[must_use]
    pub fn non_fatal(mut self, codes: impl IntoIterator<Item = Code>) -> HedgingPolicy {
        self.non_fatal = codes.into_iter().collect();
        self
    }
}

/// What a server's pushback says about the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// No pushback: the policy's own backoff.
    None,
    /// Retry no sooner than this.
    After(Duration),
    /// Do not retry.
    Stop,
}

/// Read [`RETRY_PUSHBACK`] from a response's metadata.
pub(crate) fn pushback(value: Option<&str>) -> Pushback {
    match value {
        None => Pushback::None,
        Some(value) => match value.trim().parse::<u64>() {
            Ok(ms) => Pushback::After(Duration::from_millis(ms)),
            Err(_) => Pushback::Stop,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_fully_jittered_and_capped() {
        let policy =
            RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(50), 2.0);
        assert_eq!(policy.backoff_for(1, 0.0), Duration::ZERO);
        assert_eq!(policy.backoff_for(1, 0.5), Duration::from_millis(5));
        assert_eq!(policy.backoff_for(2, 0.5), Duration::from_millis(10));
        assert_eq!(policy.backoff_for(3, 0.999_999), Duration::from_secs_f64(0.04 * 0.999_999));
        assert_eq!(policy.backoff_for(9, 0.5), Duration::from_millis(25), "capped at max");
    }

    #[test]
    fn attempts_are_capped_as_in_grpc() {
        assert_eq!(RetryPolicy::default().max_attempts(9).max_attempts, 5);
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
        assert_eq!(HedgingPolicy::new(HedgeDelay::Fixed(Duration::ZERO)).max_attempts(7).max_attempts, 5);
    }

    #[test]
    fn only_listed_codes_are_retried() {
        let policy = RetryPolicy::default();
        assert!(policy.retries(Code::Unavailable));
        assert!(!policy.retries(Code::Internal));
        assert!(!RetryPolicy::none().retries(Code::Unavailable));
        assert!(RetryPolicy::default().retry_on([Code::Aborted]).retries(Code::Aborted));
    }

    #[test]
    fn pushback_is_a_delay_or_a_stop() {
        assert_eq!(pushback(None), Pushback::None);
        assert_eq!(pushback(Some("250")), Pushback::After(Duration::from_millis(250)));
        assert_eq!(pushback(Some("-1")), Pushback::Stop, "negative: do not retry");
        assert_eq!(pushback(Some("soon")), Pushback::Stop);
    }
}
