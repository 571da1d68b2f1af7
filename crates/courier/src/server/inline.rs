//! When a handler may be polled on the connection's own task.
//!
//! Polling a handler inline saves a task spawn and a thread wake-up, but a
//! handler that does slow synchronous work before its first `.await`
//! (hashing, a blocking call) would then hold up every other call on the
//! connection and lose the parallelism of separate tasks. So each method
//! learns how long its handlers take to reach their first `.await`: the
//! first calls run in their own tasks and are timed; once a method has
//! shown itself fast, its calls are polled inline, and every poll, inline
//! or not, keeps the estimate current.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Samples a method needs before it may run inline.
const WARMUP_SAMPLES: u32 = 8;
/// A first poll slower than this (on average) keeps a method in its own tasks.
const LIMIT: Duration = Duration::from_micros(50);
/// Inline polling per burst of requests stops after this much time; the
/// rest of the burst is spawned, so one burst cannot hold the connection.
pub(crate) const BURST_BUDGET: Duration = Duration::from_millis(1);

/// What one method's handlers are like on their first poll.
#[derive(Debug, Default)]
pub(crate) struct InlinePolicy {
    /// Moving average of first-poll times, in nanoseconds.
    average_ns: AtomicU64,
    samples: AtomicU32,
}

impl InlinePolicy {
    /// Whether the next call of this method may be polled inline.
    pub(crate) fn allows_inline(&self) -> bool {
        self.samples.load(Ordering::Relaxed) >= WARMUP_SAMPLES
            && self.average_ns.load(Ordering::Relaxed) <= LIMIT.as_nanos() as u64
    }

    /// Record how long a first poll took.
    pub(crate) fn record(&self, first_poll: Duration) {
        let sample = u64::try_from(first_poll.as_nanos()).unwrap_or(u64::MAX);
        let seen = self.samples.load(Ordering::Relaxed);
        let old = self.average_ns.load(Ordering::Relaxed);
        // Weight 1/8; racing updates from other connections lose a sample.
        let new = if seen == 0 { sample } else { old - old / 8 + sample / 8 };
        self.average_ns.store(new, Ordering::Relaxed);
        if seen < WARMUP_SAMPLES {
            self.samples.store(seen + 1, Ordering::Relaxed);
        }
        // A very slow poll takes a method out of inline mode at once rather
        // than after the average catches up.
        if first_poll > LIMIT * 20 {
            self.average_ns.fetch_max(first_poll.as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_methods_go_inline_after_warm_up_and_a_slow_poll_takes_them_out() {
        let policy = InlinePolicy::default();
        for _ in 0..WARMUP_SAMPLES - 1 {
            policy.record(Duration::from_micros(2));
            assert!(!policy.allows_inline());
        }
        policy.record(Duration::from_micros(2));
        assert!(policy.allows_inline());
        policy.record(Duration::from_millis(5));
        assert!(!policy.allows_inline(), "one 5 ms poll is enough");
        for _ in 0..200 {
            policy.record(Duration::from_micros(2));
        }
        assert!(policy.allows_inline(), "and fast polls bring it back");
    }

    #[test]
    fn slow_methods_stay_in_their_own_tasks() {
        let policy = InlinePolicy::default();
        for _ in 0..100 {
            policy.record(Duration::from_micros(200));
        }
        assert!(!policy.allows_inline());
    }
}
