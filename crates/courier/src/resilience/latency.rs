//! [`Latencies`]: a method's recent latencies, for an adaptive hedging
//! delay.
//!
//! The last [`SAMPLES`] successful attempts are kept in a ring; the
//! percentile is recomputed every [`RECOMPUTE_EVERY`] samples and read
//! without a lock in between, so asking costs an atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Samples kept.
const SAMPLES: usize = 256;

/// Samples between two recomputations of the percentile.
const RECOMPUTE_EVERY: usize = 32;

/// Fewer samples than this and there is no estimate yet.
const WARM: usize = 32;

#[derive(Debug)]
pub(crate) struct Latencies {
    percentile: f64,
    ring: Mutex<Ring>,
    /// The estimate in microseconds; `u64::MAX` while warming up.
    estimate: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    samples: Vec<u32>,
    next: usize,
    since_recompute: usize,
}

impl Latencies {
    pub(crate) fn new(percentile: f64) -> Latencies {
        Latencies {
            percentile: if percentile.is_finite() { percentile.clamp(0.0, 1.0) } else { 0.95 },
            ring: Mutex::new(Ring { samples: Vec::with_capacity(SAMPLES), next: 0, since_recompute: 0 }),
            estimate: AtomicU64::new(u64::MAX),
        }
    }

    /// Record the latency of a successful attempt.
    pub(crate) fn record(&self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if ring.samples.len() < SAMPLES {
            ring.samples.push(micros);
        } else {
            let next = ring.next;
            ring.samples[next] = micros;
        }
        ring.next = (ring.next + 1) % SAMPLES;
        ring.since_recompute += 1;
        if ring.samples.len() >= WARM && ring.since_recompute >= RECOMPUTE_EVERY {
            ring.since_recompute = 0;
            let mut sorted = ring.samples.clone();
            drop(ring);
            sorted.sort_unstable();
            let rank = ((sorted.len() - 1) as f64 * self.percentile).round() as usize;
            let value = sorted[rank.min(sorted.len() - 1)];
            self.estimate.store(u64::from(value), Ordering::Relaxed);
        }
    }

    /// The latency at the percentile, once enough attempts were seen.
    pub(crate) fn estimate(&self) -> Option<Duration> {
        match self.estimate.load(Ordering::Relaxed) {
            u64::MAX => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_estimate_until_warm_then_the_percentile() {
        let latencies = Latencies::new(0.9);
        for n in 0..31u64 {
            latencies.record(Duration::from_millis(n));
        }
        assert_eq!(latencies.estimate(), None);
        latencies.record(Duration::from_millis(31));
        // 0..=31 ms: the 90th percentile rounds to rank 28.
        assert_eq!(latencies.estimate(), Some(Duration::from_millis(28)));
    }

    #[test]
    fn old_samples_are_forgotten() {
        let latencies = Latencies::new(0.5);
        for _ in 0..SAMPLES {
            latencies.record(Duration::from_millis(100));
        }
        assert_eq!(latencies.estimate(), Some(Duration::from_millis(100)));
        for _ in 0..SAMPLES {
            latencies.record(Duration::from_millis(3));
        }
        assert_eq!(latencies.estimate(), Some(Duration::from_millis(3)));
    }
}
