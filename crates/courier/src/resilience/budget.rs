//! [`RetryBudget`]: how many retries a client may send, as a share of the
//! calls it makes (Finagle's model).
//!
//! Retries help when a few calls fail and hurt when everything does: a
//! client that retries every failed call three times sends three times the
//! load to servers that are already down. A budget lets retries through
//! while they are a small part of the traffic: every call deposits
//! `percent` of a retry, every retry withdraws one, over a sliding window,
//! plus a floor of `min_per_second` so that a client making few calls can
//! still retry. Under a total outage the load sent is then at most
//! `1 + percent` times the load offered (plus the floor).
//!
//! Sans-IO: callers pass the time. The window is a ring of slots of
//! counters; a slot that has fallen out of the window is reset when it is
//! next used, so nothing runs in the background.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::striped::Striped;
use super::ticks::Ticks;

/// Slots the window is divided into: the budget forgets old calls in
/// steps of a tenth of the window.
const SLOTS: usize = 10;

/// A retry budget; see the module docs. Shared by every call of a channel.
///
/// ```
/// use std::time::Duration;
/// use courier::resilience::RetryBudget;
///
/// // Retries up to 10 % of calls, plus 5 a second, over the last 30 s.
/// let budget = RetryBudget::new(0.1, 5, Duration::from_secs(30));
/// # drop(budget);
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    percent: f64,
    min_per_second: u32,
    window: Duration,
    /// The window's slots, in time.
    ticks: Ticks,
    /// Calls not yet in a slot, all of tick `pending_tick`: every call
    /// deposits, so depositing takes no lock (see `fold`) and shares no
    /// cache line between threads (striped).
    pending: Striped,
    pending_tick: AtomicU64,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    slots: [Slot; SLOTS],
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Which tick of the window this slot holds.
    tick: u64,
    calls: u64,
    retries: u64,
}

impl Default for RetryBudget {
    /// 20 % of calls plus 10 retries a second, over 10 seconds (Finagle's
    /// defaults).
    fn default() -> RetryBudget {
        RetryBudget::new(0.2, 10, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// Retries of up to `percent` (0.0 to 1.0) of the calls made in the
    /// last `window`, plus `min_per_second` each second of it.
    pub fn new(percent: f64, min_per_second: u32, window: Duration) -> RetryBudget {
        let window = window.max(Duration::from_millis(SLOTS as u64));
        RetryBudget {
            percent: if percent.is_finite() { percent.clamp(0.0, 1.0) } else { 0.0 },
            min_per_second,
            window,
            ticks: Ticks::new(window / SLOTS as u32),
            pending: Striped::new(),
            pending_tick: AtomicU64::new(0),
            state: Mutex::new(Window { slots: [Slot::default(); SLOTS] }),
        }
    }

    /// No retries at all (beyond none).
    pub fn none() -> RetryBudget {
        RetryBudget::new(0.0, 0, Duration::from_secs(10))
    }

    /// The share of calls that may be retried.
    pub fn percent(&self) -> f64 {
        self.percent
    }

    /// Record a call.
    pub(crate) fn deposit(&self, now: Instant) {
        let tick = self.tick(now);
        if tick == self.pending_tick.load(Ordering::Acquire) {
            self.pending.add(1);
            return;
        }
        let mut window = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.fold(&mut window, tick);
        self.pending.add(1);
    }

    /// Take one retry from the budget, if it has one.
    pub(crate) fn try_withdraw(&self, now: Instant) -> bool {
        let mut window = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tick = self.tick(now);
        self.fold(&mut window, tick);
        let pending = self.pending.sum();
        let (calls, retries) = window
            .slots
            .iter()
            .filter(|slot| slot.tick + SLOTS as u64 > tick && slot.tick <= tick)
            .fold((pending, 0u64), |(calls, retries), slot| (calls + slot.calls, retries + slot.retries));
        let floor = f64::from(self.min_per_second) * self.window.as_secs_f64();
        let allowed = floor + self.percent * calls as f64;
        if (retries as f64) + 1.0 > allowed {
            return false;
        }
        Self::slot(&mut window, tick).retries += 1;
        true
    }

    /// Move the pending calls into their slot and start counting `tick`'s.
    fn fold(&self, window: &mut Window, tick: u64) {
        let pending_tick = self.pending_tick.swap(tick, Ordering::AcqRel);
        let pending = self.pending.take();
        let slot_tick = window.slots[(pending_tick % SLOTS as u64) as usize].tick;
        if pending > 0 && slot_tick <= pending_tick {
            Self::slot(window, pending_tick).calls += pending;
        }
    }

    /// The tick `now` falls in, counting slots of the window since the
    /// budget was made.
    fn tick(&self, now: Instant) -> u64 {
        self.ticks.at(now)
    }

    /// The slot for `tick`, emptied first if it held an older tick.
    fn slot(window: &mut Window, tick: u64) -> &mut Slot {
        let slot = &mut window.slots[(tick % SLOTS as u64) as usize];
        if slot.tick != tick {
            *slot = Slot { tick, calls: 0, retries: 0 };
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_calls_plus_a_floor() {
        let budget = RetryBudget::new(0.2, 1, Duration::from_secs(10));
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit(now);
        }
        // 20 % of 100 calls, plus 1 a second over 10 s.
        let granted = (0..100).filter(|_| budget.try_withdraw(now)).count();
        assert_eq!(granted, 30);
    }

    #[test]
    fn a_total_outage_is_amplified_at_most_by_the_share() {
        // Every call fails and wants two retries; the budget allows 20 %.
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        let start = Instant::now();
        let (mut calls, mut attempts) = (0u64, 0u64);
        for n in 0..10_000u64 {
            let now = start + Duration::from_millis(n);
            budget.deposit(now);
            calls += 1;
            attempts += 1;
            for _ in 0..2 {
                if budget.try_withdraw(now) {
                    attempts += 1;
                }
            }
        }
        let amplification = attempts as f64 / calls as f64;
        assert!(amplification <= 1.2 + 1e-9, "{amplification}");
        assert!(amplification > 1.19, "the budget is used: {amplification}");
    }

    #[test]
    fn old_calls_leave_the_window() {
        let budget = RetryBudget::new(0.5, 0, Duration::from_secs(1));
        let start = Instant::now();
        for _ in 0..10 {
            budget.deposit(start);
        }
        assert!(budget.try_withdraw(start));
        // Two windows later those calls no longer earn retries.
        assert!(!budget.try_withdraw(start + Duration::from_secs(2)));
        budget.deposit(start + Duration::from_secs(2));
        budget.deposit(start + Duration::from_secs(2));
        assert!(budget.try_withdraw(start + Duration::from_secs(2)));
        assert!(!budget.try_withdraw(start + Duration::from_secs(2)));
    }

    #[test]
    fn none_allows_nothing_and_odd_shares_are_clamped() {
        let none = RetryBudget::none();
        let now = Instant::now();
        for _ in 0..1000 {
            none.deposit(now);
        }
        assert!(!none.try_withdraw(now));
        assert_eq!(RetryBudget::new(7.0, 0, Duration::from_secs(1)).percent(), 1.0);
        assert_eq!(RetryBudget::new(f64::NAN, 0, Duration::from_secs(1)).percent(), 0.0);
    }
}
