//! [`Breaker`]: a circuit breaker over a sliding window of outcomes.
//!
//! One guards each instance of a discovered service (is this instance
//! broken?) and one each method, service-wide (is this method broken
//! everywhere?). Closed, calls pass and their outcomes fill a window of
//! [`BreakerPolicy::window`]; it opens when enough of them failed (or were
//! slow), or after a run of consecutive failures. Open, calls are refused
//! (an instance is skipped, a method fails fast) for a time that doubles
//! with each trip in a row. Then half-open: a few probe calls pass; as many
//! successes close it, one failure opens it again. A probe that neither
//! answers nor fails within [`BreakerPolicy::probe_timeout`] counts as a
//! failure, so a hung probe cannot leave the breaker half-open for ever.
//!
//! Only outcomes of calls the breaker let through count: its own refusals
//! never feed it, or an open breaker would keep itself open.
//!
//! Sans-IO: callers pass the time; nothing runs in the background.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::striped::Striped;
use super::ticks::Ticks;

/// Buckets the window is divided into: outcomes age out a tenth of the
/// window at a time.
const BUCKETS: usize = 10;

/// When a circuit breaker (per instance, or per method) opens and how it recovers.
///
/// ```
/// use std::time::Duration;
/// use courier::resilience::BreakerPolicy;
///
/// // Open when half of at least 10 calls in 5 s failed or took over 200 ms.
/// let policy = BreakerPolicy::default()
///     .window(Duration::from_secs(5))
///     .min_calls(10)
///     .failure_ratio(0.5)
///     .slow_call(Duration::from_millis(200));
/// # drop(policy);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerPolicy {
    pub(crate) window: Duration,
    pub(crate) min_calls: u32,
    pub(crate) failure_ratio: f64,
    pub(crate) consecutive_failures: u32,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) open_for: Duration,
    pub(crate) max_open_for: Duration,
    pub(crate) probes: u32,
    pub(crate) probe_timeout: Duration,
    pub(crate) enabled: bool,
}

impl Default for BreakerPolicy {
    /// Opens when half of at least 20 calls in the last 10 s failed, or
    /// after 5 failures in a row; open for 1 s, doubling with each trip in
    /// a row up to 30 s; closes after 3 successful probes, each given 2 s.
    /// Slow calls do not count until [`BreakerPolicy::slow_call`] says what
    /// slow is.
    fn default() -> BreakerPolicy {
        BreakerPolicy {
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_ratio: 0.5,
            consecutive_failures: 5,
            slow_call: None,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(30),
            probes: 3,
            probe_timeout: Duration::from_secs(2),
            enabled: true,
        }
    }
}

impl BreakerPolicy {
    /// A breaker that never opens.
    pub fn disabled() -> BreakerPolicy {
        BreakerPolicy { enabled: false, ..BreakerPolicy::default() }
    }

    /// How far back outcomes count (default 10 s).
    #[must_use]
    pub fn window(mut self, window: Duration) -> BreakerPolicy {
        self.window = window.max(Duration::from_millis(BUCKETS as u64));
        self
    }

    /// Outcomes the window must hold before the failure ratio can open the
    /// breaker (default 20).
    #[must_use]
    pub fn min_calls(mut self, calls: u32) -> BreakerPolicy {
        self.min_calls = calls.max(1);
        self
    }

    /// The share of failed or slow calls in the window that opens the
    /// breaker (default 0.5).
    #[must_use]
    pub fn failure_ratio(mut self, ratio: f64) -> BreakerPolicy {
        self.failure_ratio = if ratio.is_finite() { ratio.clamp(0.0, 1.0) } else { 0.5 };
        self
    }

    /// Failures in a row that open the breaker whatever the window says
    /// (default 5): what catches an instance that stopped answering before
    /// the window fills.
    #[must_use]
    pub fn consecutive_failures(mut self, failures: u32) -> BreakerPolicy {
        self.consecutive_failures = failures.max(1);
        self
    }

    /// Count a call that took longer than `threshold` as a failure, even if
    /// it succeeded (default: none do).
    #[must_use]
    pub fn slow_call(mut self, threshold: Duration) -> BreakerPolicy {
        self.slow_call = Some(threshold);
        self
    }

    /// How long the breaker stays open after its first trip (default 1 s),
    /// doubling with each trip in a row up to `max` (default 30 s).
    #[must_use]
    pub fn open_for(mut self, first: Duration, max: Duration) -> BreakerPolicy {
        self.open_for = first;
        self.max_open_for = max.max(first);
        self
    }

    /// Probe calls let through half-open, all of which must succeed to
    /// close it (default 3); and how long each may take before it counts as
    /// a failure (default 2 s).
    #[must_use]
    pub fn probes(mut self, probes: u32, timeout: Duration) -> BreakerPolicy {
        self.probes = probes.max(1);
        self.probe_timeout = timeout;
        self
    }

    /// The slow-call threshold, if one is set.
    pub fn slow_call_threshold(&self) -> Option<Duration> {
        self.slow_call
    }

    /// The time a probe is given.
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }
}

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls pass.
    HalfOpen,
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        })
    }
}

/// What a call let through is, for recording its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Closed: the outcome goes into the window.
    Closed { epoch: u64 },
    /// One of the half-open probes.
    Probe { id: u64 },
    /// Let through although open, because every alternative is open too:
    /// a success counts as a probe's, a failure changes nothing.
    Forced,
}

/// How a call let through ended, as a breaker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { successes: u32, probes: Vec<(u64, Instant)> },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped whenever the breaker leaves `Closed`, so outcomes of calls
    /// let through before are not counted into a fresh window.
    epoch: u64,
    /// Trips in a row without closing in between: the open time doubles.
    trips: u32,
    next_probe: u64,
    buckets: [Bucket; BUCKETS],
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    tick: u64,
    calls: u32,
    failures: u32,
}

/// A circuit breaker; see the module docs.
///
/// Closed (the state nearly every call finds it in), letting a call
/// through and recording its success take no lock: a flag says closed,
/// successes are counted in an atomic and folded into the window's bucket
/// under the lock when the bucket's time is up or a failure comes. Every
/// other path takes the lock.
#[derive(Debug)]
pub(crate) struct Breaker {
    policy: BreakerPolicy,
    /// The window's buckets, in time.
    ticks: Ticks,
    /// Whether the phase is `Closed` (kept with it under the lock).
    closed: AtomicBool,
    /// `Inner::epoch`, readable without the lock.
    epoch: AtomicU64,
    /// Failures in a row; any success resets it.
    consecutive: AtomicU32,
    /// Successes not yet in a bucket, all of tick `pending_tick`
    /// (striped: every successful call adds to it).
    pending: Striped,
    pending_tick: AtomicU64,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub(crate) fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            ticks: Ticks::new(policy.window / BUCKETS as u32),
            closed: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            pending: Striped::new(),
            pending_tick: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                epoch: 0,
                trips: 0,
                next_probe: 0,
                buckets: [Bucket::default(); BUCKETS],
            }),
        }
    }

    pub(crate) fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the breaker is at `now` (an open breaker whose time is up
    /// reads half-open: the next call will be a probe).
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.inner();
        self.expire_probes(&mut inner, now);
        match inner.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call would be let through at `now` (without letting one).
    pub(crate) fn would_pass(&self, now: Instant) -> bool {
        if !self.policy.enabled || self.closed.load(Ordering::Acquire) {
            return true;
        }
        let mut inner = self.inner();
        self.expire_probes(&mut inner, now);
        match &inner.phase {
            Phase::Closed => true,
            Phase::Open { until } => now >= *until,
            Phase::HalfOpen { probes, .. } => probes.len() < self.policy.probes as usize,
        }
    }

    /// Let a call through at `now`, or refuse it (`None`).
    pub(crate) fn try_pass(&self, now: Instant) -> Option<Pass> {
        if !self.policy.enabled {
            return Some(Pass::Closed { epoch: 0 });
        }
        if self.closed.load(Ordering::Acquire) {
            return Some(Pass::Closed { epoch: self.epoch.load(Ordering::Acquire) });
        }
        let mut inner = self.inner();
        self.expire_probes(&mut inner, now);
        if let Phase::Open { until } = inner.phase {
            if now < until {
                return None;
            }
            inner.phase = Phase::HalfOpen { successes: 0, probes: Vec::new() };
        }
        let epoch = inner.epoch;
        let id = inner.next_probe;
        match &mut inner.phase {
            Phase::Closed => Some(Pass::Closed { epoch }),
            Phase::HalfOpen { probes, .. } if probes.len() < self.policy.probes as usize => {
                probes.push((id, now));
                inner.next_probe += 1;
                Some(Pass::Probe { id })
            }
            Phase::HalfOpen { .. } | Phase::Open { .. } => None,
        }
    }

    /// Let a call through whatever the state (see [`Pass::Forced`]).
    pub(crate) fn force(&self, now: Instant) -> Pass {
        self.try_pass(now).unwrap_or(Pass::Forced)
    }

    /// The outcome of a call `pass` let through, ended at `now`.
    pub(crate) fn record(&self, pass: Pass, verdict: Verdict, now: Instant) {
        if !self.policy.enabled {
            return;
        }
        if let (Pass::Closed { epoch }, Verdict::Success) = (pass, verdict) {
            // The common case, without the lock.
            if epoch != self.epoch.load(Ordering::Acquire) {
                return;
            }
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            let tick = self.tick(now);
            if tick == self.pending_tick.load(Ordering::Acquire) {
                self.pending.add(1);
                return;
            }
            // A new bucket: fold the pending ones in under the lock first.
            let mut inner = self.inner();
            self.fold(&mut inner, tick);
            self.pending.add(1);
            return;
        }
        let mut inner = self.inner();
        self.expire_probes(&mut inner, now);
        match pass {
            Pass::Closed { epoch } => {
                if epoch != inner.epoch || !matches!(inner.phase, Phase::Closed) {
                    return;
                }
                let tick = self.tick(now);
                self.fold(&mut inner, tick);
                let bucket = Self::bucket(&mut inner, tick);
                bucket.calls += 1;
                bucket.failures += 1;
                self.consecutive.fetch_add(1, Ordering::AcqRel);
                if self.should_trip(&mut inner, tick) {
                    self.trip(&mut inner, now);
                }
            }
            Pass::Probe { id } => {
                let Phase::HalfOpen { successes, probes } = &mut inner.phase else { return };
                let Some(position) = probes.iter().position(|(probe, _)| *probe == id) else { return };
                probes.swap_remove(position);
                match verdict {
                    Verdict::Failure => self.trip(&mut inner, now),
                    Verdict::Success => {
                        *successes += 1;
                        if *successes >= self.policy.probes {
                            self.close(&mut inner);
                        }
                    }
                }
            }
            Pass::Forced => {
                if verdict == Verdict::Success {
                    inner.phase = Phase::HalfOpen { successes: 1, probes: Vec::new() };
                    if self.policy.probes <= 1 {
                        self.close(&mut inner);
                    }
                }
            }
        }
    }

    /// A call `pass` let through was abandoned without an outcome (the
    /// caller went away, another hedged attempt won): it frees its probe
    /// slot and counts for nothing.
    pub(crate) fn release(&self, pass: Pass) {
        if let Pass::Probe { id } = pass {
            let mut inner = self.inner();
            if let Phase::HalfOpen { probes, .. } = &mut inner.phase {
                probes.retain(|(probe, _)| *probe != id);
            }
        }
    }

    /// A probe out longer than its timeout is a failure.
    fn expire_probes(&self, inner: &mut Inner, now: Instant) {
        if let Phase::HalfOpen { probes, .. } = &inner.phase
            && probes
                .iter()
                .any(|(_, started)| now.saturating_duration_since(*started) >= self.policy.probe_timeout)
        {
            self.trip(inner, now);
        }
    }

    /// Move the pending successes into their bucket, and start counting
    /// successes of `tick`.
    fn fold(&self, inner: &mut Inner, tick: u64) {
        let pending_tick = self.pending_tick.swap(tick, Ordering::AcqRel);
        let pending = self.pending.take();
        // (A slot already holding a later tick keeps it: the few successes
        // of a clock read out of order are not worth a newer bucket.)
        let slot_tick = inner.buckets[(pending_tick % BUCKETS as u64) as usize].tick;
        if pending > 0 && slot_tick <= pending_tick {
            let bucket = Self::bucket(inner, pending_tick);
            bucket.calls = bucket.calls.saturating_add(u32::try_from(pending).unwrap_or(u32::MAX));
        }
    }

    fn should_trip(&self, inner: &mut Inner, tick: u64) -> bool {
        if self.consecutive.load(Ordering::Acquire) >= self.policy.consecutive_failures {
            return true;
        }
        let (calls, failures) = inner
            .buckets
            .iter()
            .filter(|bucket| bucket.tick + BUCKETS as u64 > tick && bucket.tick <= tick)
            .fold((0u32, 0u32), |(calls, failures), bucket| {
                (calls + bucket.calls, failures + bucket.failures)
            });
        calls >= self.policy.min_calls && f64::from(failures) >= self.policy.failure_ratio * f64::from(calls)
    }

    fn trip(&self, inner: &mut Inner, now: Instant) {
        let factor = 2u32.saturating_pow(inner.trips.min(16));
        let open_for = self.policy.open_for.saturating_mul(factor).min(self.policy.max_open_for);
        inner.trips = inner.trips.saturating_add(1);
        inner.epoch += 1;
        inner.phase = Phase::Open { until: now + open_for };
        self.epoch.store(inner.epoch, Ordering::Release);
        self.closed.store(false, Ordering::Release);
    }

    fn close(&self, inner: &mut Inner) {
        inner.phase = Phase::Closed;
        // Forget one trip, not all: an instance that keeps failing again
        // soon after recovering stays out longer each time.
        inner.trips = inner.trips.saturating_sub(1);
        self.consecutive.store(0, Ordering::Release);
        inner.epoch += 1;
        inner.buckets = [Bucket::default(); BUCKETS];
        self.pending.take();
        self.epoch.store(inner.epoch, Ordering::Release);
        self.closed.store(true, Ordering::Release);
    }

    fn tick(&self, now: Instant) -> u64 {
        self.ticks.at(now)
    }

    fn bucket(inner: &mut Inner, tick: u64) -> &mut Bucket {
        let bucket = &mut inner.buckets[(tick % BUCKETS as u64) as usize];
        if bucket.tick != tick {
            *bucket = Bucket { tick, calls: 0, failures: 0 };
        }
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fail(breaker: &Breaker, now: Instant) {
        let pass = breaker.try_pass(now).expect("closed");
        breaker.record(pass, Verdict::Failure, now);
    }

    fn succeed(breaker: &Breaker, now: Instant) {
        let pass = breaker.try_pass(now).expect("closed");
        breaker.record(pass, Verdict::Success, now);
    }

    #[test]
    fn consecutive_failures_open_it_and_successes_in_between_reset_the_run() {
        let breaker = Breaker::new(BreakerPolicy::default().consecutive_failures(3));
        let t = Instant::now();
        fail(&breaker, t);
        fail(&breaker, t);
        succeed(&breaker, t);
        fail(&breaker, t);
        fail(&breaker, t);
        assert_eq!(breaker.state(t), BreakerState::Closed);
        fail(&breaker, t);
        assert_eq!(breaker.state(t), BreakerState::Open);
        assert!(breaker.try_pass(t + ms(999)).is_none(), "refused while open");
        assert_eq!(breaker.state(t + ms(1000)), BreakerState::HalfOpen);
    }

    #[test]
    fn the_failure_ratio_opens_it_once_enough_calls_are_in_the_window() {
        let breaker = Breaker::new(BreakerPolicy::default().min_calls(10).failure_ratio(0.5));
        let t = Instant::now();
        // Alternating: never 5 in a row, 50 % failures.
        for n in 0..9 {
            if n % 2 == 0 { fail(&breaker, t) } else { succeed(&breaker, t) }
        }
        assert_eq!(breaker.state(t), BreakerState::Closed, "9 calls are not enough");
        succeed(&breaker, t);
        assert_eq!(breaker.state(t), BreakerState::Closed, "successes never trip it");
        fail(&breaker, t);
        assert_eq!(breaker.state(t), BreakerState::Open, "6 of 11 failed");
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let breaker = Breaker::new(BreakerPolicy::default().window(Duration::from_secs(1)).min_calls(4));
        let t = Instant::now();
        for _ in 0..3 {
            fail(&breaker, t);
        }
        succeed(&breaker, t);
        // Two windows later only the new outcomes count: 1 failure in 4.
        let later = t + Duration::from_secs(2);
        for _ in 0..3 {
            succeed(&breaker, later);
        }
        fail(&breaker, later);
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[test]
    fn probes_close_it_and_a_failed_probe_reopens_it_for_longer() {
        let policy = BreakerPolicy::default().consecutive_failures(1).probes(2, Duration::from_secs(5));
        let breaker = Breaker::new(policy);
        let t = Instant::now();
        fail(&breaker, t);
        let t1 = t + Duration::from_secs(1);
        let first = breaker.try_pass(t1).expect("a probe");
        let second = breaker.try_pass(t1).expect("a second probe");
        assert!(breaker.try_pass(t1).is_none(), "only two probes at once");
        breaker.record(first, Verdict::Success, t1);
        breaker.record(second, Verdict::Failure, t1);
        assert_eq!(breaker.state(t1), BreakerState::Open);
        // The second trip in a row lasts twice as long.
        assert_eq!(breaker.state(t1 + ms(1999)), BreakerState::Open);
        let t2 = t1 + Duration::from_secs(2);
        for _ in 0..2 {
            let probe = breaker.try_pass(t2).expect("a probe");
            breaker.record(probe, Verdict::Success, t2);
        }
        assert_eq!(breaker.state(t2), BreakerState::Closed);
        assert!(matches!(breaker.try_pass(t2), Some(Pass::Closed { .. })));
    }

    #[test]
    fn a_hung_probe_times_out_into_a_failure() {
        let policy = BreakerPolicy::default().consecutive_failures(1).probes(1, ms(300));
        let breaker = Breaker::new(policy);
        let t = Instant::now();
        fail(&breaker, t);
        let t1 = t + Duration::from_secs(1);
        let _hung = breaker.try_pass(t1).expect("a probe");
        assert!(breaker.try_pass(t1 + ms(299)).is_none(), "the one probe slot is taken");
        // Its timeout passes: it failed, so the breaker is open again (for
        // 2 s, the second trip), not stuck half-open.
        assert_eq!(breaker.state(t1 + ms(300)), BreakerState::Open);
        let t2 = t1 + ms(300) + Duration::from_secs(2);
        assert!(matches!(breaker.try_pass(t2), Some(Pass::Probe { .. })), "probing again");
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot_and_counts_for_nothing() {
        let policy = BreakerPolicy::default().consecutive_failures(1).probes(1, Duration::from_secs(5));
        let breaker = Breaker::new(policy);
        let t = Instant::now();
        fail(&breaker, t);
        let t1 = t + Duration::from_secs(1);
        let probe = breaker.try_pass(t1).expect("a probe");
        breaker.release(probe);
        let again = breaker.try_pass(t1).expect("the slot is free");
        breaker.record(again, Verdict::Success, t1);
        assert_eq!(breaker.state(t1), BreakerState::Closed);
    }

    #[test]
    fn outcomes_from_before_a_trip_do_not_count_after_it() {
        let breaker = Breaker::new(BreakerPolicy::default().consecutive_failures(2).probes(1, ms(500)));
        let t = Instant::now();
        let early = breaker.try_pass(t).expect("closed");
        fail(&breaker, t);
        fail(&breaker, t);
        // Closed again after a probe.
        let t1 = t + Duration::from_secs(1);
        let probe = breaker.try_pass(t1).expect("a probe");
        breaker.record(probe, Verdict::Success, t1);
        assert_eq!(breaker.state(t1), BreakerState::Closed);
        // The call let through before the trip fails late: not counted.
        breaker.record(early, Verdict::Failure, t1);
        fail(&breaker, t1);
        assert_eq!(breaker.state(t1), BreakerState::Closed, "one failure of this epoch only");
    }

    #[test]
    fn a_forced_success_starts_closing_it_and_a_forced_failure_changes_nothing() {
        let breaker = Breaker::new(BreakerPolicy::default().consecutive_failures(1).probes(2, ms(500)));
        let t = Instant::now();
        fail(&breaker, t);
        let forced = breaker.force(t);
        assert_eq!(forced, Pass::Forced);
        breaker.record(forced, Verdict::Failure, t);
        assert_eq!(breaker.state(t + ms(999)), BreakerState::Open);
        breaker.record(breaker.force(t), Verdict::Success, t);
        assert_eq!(breaker.state(t), BreakerState::HalfOpen);
        let probe = breaker.try_pass(t).expect("a probe");
        breaker.record(probe, Verdict::Success, t);
        assert_eq!(breaker.state(t), BreakerState::Closed);
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let breaker = Breaker::new(BreakerPolicy::disabled());
        let t = Instant::now();
        for _ in 0..100 {
            fail(&breaker, t);
        }
        assert_eq!(breaker.state(t), BreakerState::Closed);
    }
}
