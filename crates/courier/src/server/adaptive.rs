//! [`AdaptiveLimit`]: a concurrency limit per method that finds the
//! server's capacity from latency, with nothing to configure (a gradient
//! limiter, as Netflix's concurrency-limits and brpc's auto limiter do it).
//!
//! Each method keeps its no-load latency (the lowest it has seen, drifting
//! slowly up so it can follow a real change) and, per window of completed
//! calls, their mean latency. While the mean stays within `tolerance` of
//! the no-load latency the limit grows (gently, and only when calls came
//! near it: an idle method proves nothing); when latency climbs past that,
//! calls are queueing somewhere (a pool, a lock, the CPU), and the limit
//! shrinks in proportion at once, so it hovers where the capacity is used
//! and the queue is short. Calls over the limit are refused
//! at once with `ResourceExhausted` and a pushback, so the calls admitted
//! keep close to the no-load latency and the server keeps its goodput.
//!
//! Queueing of less than [`AdaptiveLimit::slack`] (half a millisecond by
//! default) is never overload: a method that answers in microseconds would
//! otherwise read every scheduler hiccup as a queue many times its latency
//! and shed a healthy load.
//!
//! Completed calls are counted with atomics; the lock is taken once per
//! window, by the call that closes it, so the limiter costs little on a
//! method that answers hundreds of thousands of calls a second.
//!
//! Opt-in, as in brpc and Envoy: a method whose latency varies by design
//! (long polls, client-chosen work) would read as overload.
//!
//! Sans-IO: callers pass the time and latencies.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

/// The settings of the adaptive limit; the defaults need no tuning.
///
/// ```
/// use courier::{AdaptiveLimit, Server};
/// let builder = Server::builder().adaptive_concurrency(AdaptiveLimit::default());
/// # drop(builder);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveLimit {
    initial: usize,
    min: usize,
    max: usize,
    tolerance: f64,
    slack: Duration,
}

impl Default for AdaptiveLimit {
    /// Start at 20 concurrent calls per method, never below 4 nor above
    /// 5,000; latency up to 1.25 times the no-load latency plus 0.5 ms is
    /// no overload.
    fn default() -> AdaptiveLimit {
        AdaptiveLimit { initial: 20, min: 4, max: 5_000, tolerance: 1.25, slack: Duration::from_micros(500) }
    }
}

impl AdaptiveLimit {
    /// The limit before anything is measured.
    #[must_use]
    pub fn initial(mut self, limit: usize) -> AdaptiveLimit {
        self.initial = limit.max(1);
        self
    }

    /// The range the limit stays in.
    #[must_use]
    pub fn bounds(mut self, min: usize, max: usize) -> AdaptiveLimit {
        self.min = min.max(1);
        self.max = max.max(self.min);
        self
    }

    /// How far above the no-load latency the mean may be before the limit
    /// shrinks (at least 1.0).
    #[must_use]
    pub fn tolerance(mut self, tolerance: f64) -> AdaptiveLimit {
        self.tolerance = if tolerance.is_finite() { tolerance.max(1.0) } else { 1.25 };
        self
    }

    /// Queueing that is never overload, however small the no-load latency
    /// (added to `tolerance` times it).
    #[must_use]
    pub fn slack(mut self, slack: Duration) -> AdaptiveLimit {
        self.slack = slack;
        self
    }
}

/// Calls per window at least, and the longest a window lasts.
const MIN_SAMPLES: usize = 16;
const MAX_WINDOW: Duration = Duration::from_millis(200);

/// How long latency must stay up before the no-load estimate follows it.
const DRIFT: Duration = Duration::from_secs(120);

/// One method's limiter.
#[derive(Debug)]
pub(crate) struct Limiter {
    settings: AdaptiveLimit,
    in_flight: AtomicUsize,
    /// The current limit, read on every call without the lock.
    limit: AtomicUsize,
    /// The window being filled, without the lock: calls completed, their
    /// latencies summed (ns), the most in flight any of them saw, and when
    /// it started (ns after `epoch`; 0 before the first call).
    samples: AtomicUsize,
    total_nanos: AtomicU64,
    peak_in_flight: AtomicUsize,
    window_start: AtomicU64,
    epoch: Instant,
    state: Mutex<State>,
}

/// What changes once per window, under the lock.
#[derive(Debug)]
struct State {
    limit: f64,
    /// The no-load latency estimate, in seconds (`None` before a window).
    no_load: Option<f64>,
}

/// A call the limiter admitted; give it back with [`Limiter::done`].
#[derive(Debug)]
pub(crate) struct Admitted {
    limiter: Arc<Limiter>,
    started: Instant,
    in_flight: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let now = Instant::now();
        self.limiter.done(now - self.started, self.in_flight, now);
    }
}

impl Limiter {
    pub(crate) fn new(settings: AdaptiveLimit) -> Limiter {
        let initial = settings.initial.clamp(settings.min, settings.max);
        Limiter {
            settings,
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(initial),
            samples: AtomicUsize::new(0),
            total_nanos: AtomicU64::new(0),
            peak_in_flight: AtomicUsize::new(0),
            window_start: AtomicU64::new(0),
            epoch: Instant::now(),
            state: Mutex::new(State { limit: initial as f64, no_load: None }),
        }
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The no-load latency estimate, once measured.
    pub(crate) fn no_load(&self) -> Option<Duration> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).no_load.map(Duration::from_secs_f64)
    }

    /// Admit a call started at `now`, or refuse it (giving the limiter
    /// back) if the method is at its limit.
    pub(crate) fn try_admit(self: Arc<Self>, now: Instant) -> Result<Admitted, Arc<Limiter>> {
        let limit = self.limit();
        match self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
        {
            Ok(before) => Ok(Admitted { limiter: self, started: now, in_flight: before + 1 }),
            Err(_) => Err(self),
        }
    }

    /// A call that ran `latency` with `in_flight` calls (itself included)
    /// when it started ended at `now`.
    fn done(&self, latency: Duration, in_flight: usize, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        // Never 0, which means "no window yet".
        let at =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX).max(1);
        // Plain loads first: the window has started and the peak is not
        // beaten on almost every call, and a load costs far less than the
        // locked read-modify-write it saves.
        if self.window_start.load(Ordering::Acquire) == 0 {
            let _ = self.window_start.compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire);
        }
        let samples = self.samples.fetch_add(1, Ordering::AcqRel) + 1;
        self.total_nanos.fetch_add(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX), Ordering::AcqRel);
        if in_flight > self.peak_in_flight.load(Ordering::Acquire) {
            self.peak_in_flight.fetch_max(in_flight, Ordering::AcqRel);
        }
        let start = self.window_start.load(Ordering::Acquire);
        let lasted = Duration::from_nanos(at.saturating_sub(start));
        let long_enough =
            samples >= MIN_SAMPLES.max(self.limit() / 4) || (lasted >= MAX_WINDOW && samples >= 4);
        if !long_enough {
            return;
        }
        // The call that closes the window updates the limit; calls that
        // finish meanwhile count toward the next window.
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if self.window_start.load(Ordering::Acquire) != start {
            return; // another call closed this window first
        }
        let samples = self.samples.swap(0, Ordering::AcqRel);
        let total = self.total_nanos.swap(0, Ordering::AcqRel);
        let peak = self.peak_in_flight.swap(0, Ordering::AcqRel);
        self.window_start.store(at, Ordering::Release);
        if samples == 0 {
            return;
        }
        let mean = total as f64 / 1e9 / samples as f64;
        let lasted = lasted.as_secs_f64();
        let no_load = match state.no_load {
            // Below the estimate: the new no-load latency. Above: drift up,
            // by the share of [`DRIFT`] the window lasted, so a method that
            // really got slower (a bigger data set) is not read as
            // overloaded for ever, while minutes of overload barely move it.
            Some(no_load) if mean >= no_load => {
                no_load + (mean - no_load) * (lasted / DRIFT.as_secs_f64()).min(1.0)
            }
            _ => mean,
        };
        state.no_load = Some(no_load);
        let limit = state.limit;
        let acceptable = self.settings.tolerance * no_load + self.settings.slack.as_secs_f64();
        let gradient = (acceptable / mean.max(f64::MIN_POSITIVE)).clamp(0.5, 1.0);
        let next = if gradient < 1.0 {
            // Calls are queueing: shrink in proportion, at once.
            limit * gradient
        } else if (peak as f64) < limit / 2.0 {
            // Calls never came near the limit: no evidence it can grow.
            limit
        } else {
            // Room to spare: grow gently, by a fifth of the root each window.
            limit + limit.sqrt() * 0.2
        };
        let next = next.clamp(self.settings.min as f64, self.settings.max as f64);
        state.limit = next;
        self.limit.store(next.round() as usize, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a limiter with a server of `workers` that each take `service`
    /// per call, offered `concurrency` calls at once, for `rounds` windows;
    /// returns the limit it settles at.
    fn settle(limiter: &Arc<Limiter>, workers: usize, service: Duration, concurrency: usize, rounds: usize) {
        let mut now = Instant::now();
        for _ in 0..rounds {
            let admitted: Vec<Admitted> =
                (0..concurrency).filter_map(|_| limiter.clone().try_admit(now).ok()).collect();
            let n = admitted.len();
            // Queueing: n calls on `workers` workers take n/workers service
            // times on average (at least one).
            let latency = service.mul_f64((n as f64 / workers as f64).max(1.0));
            now += latency;
            for call in admitted {
                let in_flight = call.in_flight;
                std::mem::forget(call);
                limiter.done(latency, in_flight, now);
            }
        }
    }

    #[test]
    fn under_overload_the_limit_settles_just_above_the_capacity() {
        let limiter = Arc::new(Limiter::new(AdaptiveLimit::default()));
        // First no load, to learn the no-load latency.
        settle(&limiter, 8, Duration::from_millis(10), 4, 20);
        assert_eq!(limiter.no_load(), Some(Duration::from_millis(10)));
        // Then 40 calls at once on 8 workers.
        settle(&limiter, 8, Duration::from_millis(10), 40, 300);
        let limit = limiter.limit();
        assert!((8..=14).contains(&limit), "settled at {limit}");
    }

    #[test]
    fn an_idle_method_does_not_grow_its_limit() {
        let limiter = Arc::new(Limiter::new(AdaptiveLimit::default().initial(20)));
        settle(&limiter, 100, Duration::from_millis(1), 2, 200);
        assert_eq!(limiter.limit(), 20, "two calls at a time say nothing about 20");
    }

    #[test]
    fn with_capacity_to_spare_the_limit_grows_to_meet_the_demand() {
        let limiter = Arc::new(Limiter::new(AdaptiveLimit::default().initial(10)));
        settle(&limiter, 1000, Duration::from_millis(1), 200, 200);
        assert!(limiter.limit() >= 150, "grew to {}", limiter.limit());
    }

    #[test]
    fn calls_over_the_limit_are_refused_and_slots_come_back() {
        let limiter = Arc::new(Limiter::new(AdaptiveLimit::default().initial(2).bounds(1, 10)));
        let now = Instant::now();
        let a = limiter.clone().try_admit(now).expect("first");
        let _b = limiter.clone().try_admit(now).expect("second");
        assert!(limiter.clone().try_admit(now).is_err());
        drop(a);
        assert!(limiter.clone().try_admit(now).is_ok());
    }

    #[test]
    fn a_microsecond_method_is_not_shrunk_by_a_scheduler_hiccup() {
        let limiter = Arc::new(Limiter::new(AdaptiveLimit::default().initial(64)));
        // 64 at a time answering in 5 us: the no-load latency.
        settle(&limiter, 64, Duration::from_micros(5), 64, 20);
        let before = limiter.limit();
        assert!(before >= 64, "grew or held: {before}");
        // A window in which every call waited 300 us behind a descheduled
        // thread: far over 1.25 x 5 us, but within the slack.
        settle(&limiter, 64, Duration::from_micros(300), 64, 1);
        assert!(limiter.limit() >= before, "held at {} (was {before})", limiter.limit());
        // Real queueing, past the slack, still shrinks it.
        settle(&limiter, 64, Duration::from_millis(3), 64, 1);
        assert!(limiter.limit() < before, "shrank to {} (was {before})", limiter.limit());
    }
}
