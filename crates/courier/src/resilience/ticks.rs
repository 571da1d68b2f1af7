//! [`Ticks`]: time cut into equal ticks since an origin, for the sliding
//! windows of the breaker and the retry budget.
//!
//! Both ask for the tick of every call, so it is computed in `u64`: a
//! `u128` division (what `Duration::as_nanos` leads to) costs tens of
//! instructions on each call.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticks {
    origin: Instant,
    len_nanos: u64,
}

impl Ticks {
    /// Ticks of `len` (at least 1 ns), from now.
    pub(crate) fn new(len: Duration) -> Ticks {
        Ticks { origin: Instant::now(), len_nanos: u64::try_from(len.as_nanos()).unwrap_or(u64::MAX).max(1) }
    }

    /// The tick `now` falls in (0 before the origin).
    pub(crate) fn at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        // Saturates after 584 years.
        let nanos =
            elapsed.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(elapsed.subsec_nanos()));
        nanos / self.len_nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_count_whole_lengths_since_the_origin() {
        let ticks = Ticks::new(Duration::from_millis(100));
        let origin = ticks.origin;
        assert_eq!(ticks.at(origin), 0);
        assert_eq!(ticks.at(origin + Duration::from_millis(99)), 0);
        assert_eq!(ticks.at(origin + Duration::from_millis(100)), 1);
        assert_eq!(ticks.at(origin + Duration::from_secs(3600)), 36_000);
        assert_eq!(ticks.at(origin.checked_sub(Duration::from_secs(1)).unwrap_or(origin)), 0);
        let nanosecond = Ticks::new(Duration::ZERO);
        assert_eq!(nanosecond.at(nanosecond.origin + Duration::from_nanos(5)), 5, "at least 1 ns");
    }
}
