//! Reconnect backoff: exponential, capped, with jitter.
//!
//! Jitter matters: when a server restarts, every client that lost its
//! connection would otherwise retry in lockstep.

use std::time::Duration;

/// Reconnect backoff settings (gRPC's connection-backoff shape).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Growth factor per further failure.
    pub multiplier: f64,
    /// Upper bound on the delay.
    pub max: Duration,
    /// Random spread, as a fraction: 0.2 means ±20 %.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier: 1.6,
            max: Duration::from_secs(5),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before attempt `failures + 1`, given `failures` so far
    /// (at least 1), with `unit_random` uniform in `[0, 1)`.
    pub fn delay(&self, failures: u32, unit_random: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - spread + 2.0 * spread * unit_random.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_bounded_jitter() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(backoff.delay(2, 0.5), Duration::from_millis(160));
        assert_eq!(backoff.delay(50, 0.5), Duration::from_secs(5));
        let low = backoff.delay(3, 0.0).as_secs_f64();
        let high = backoff.delay(3, 0.999_999).as_secs_f64();
        assert!((low - 0.256 * 0.8).abs() < 1e-6, "{low}");
        assert!((high - 0.256 * 1.2).abs() < 1e-3, "{high}");
    }
}
