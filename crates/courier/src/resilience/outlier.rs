//! Passive health: eject an instance after consecutive failures to reach
//! it, for a backoff that doubles with each ejection, then re-admit it.
//!
//! Only failures where nothing reached the instance count (refused or
//! timed-out connects, connections lost before the request was sent): they
//! say the instance is gone, not that one call was bad.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Outlier detection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive failures that eject an instance.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one doubles it.
    pub base: Duration,
    /// The longest an ejection lasts.
    pub max: Duration,
}

impl Default for Ejection {
    fn default() -> Ejection {
        Ejection { consecutive_failures: 3, base: Duration::from_secs(1), max: Duration::from_secs(30) }
    }
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// The health of one instance.
#[derive(Debug, Default)]
pub(crate) struct Health {
    state: Mutex<State>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the instance is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.state().ejected_until.is_some_and(|until| now < until)
    }

    /// A call reached it.
    pub(crate) fn success(&self) {
        let mut state = self.state();
        state.failures = 0;
        if state.ejected_until.is_some_and(|until| Instant::now() >= until) {
            // Back in service: forget one ejection, so a recovered instance
            // is not punished forever for an old outage.
            state.ejected_until = None;
            state.ejections = state.ejections.saturating_sub(1);
        }
    }

    /// A call could not reach it; returns whether this ejected it.
    pub(crate) fn failure(&self, now: Instant, policy: &Ejection) -> bool {
        let mut state = self.state();
        state.failures += 1;
        if state.failures < policy.consecutive_failures
            || state.ejected_until.is_some_and(|until| now < until)
        {
            return false;
        }
        let factor = 2u32.saturating_pow(state.ejections.min(16));
        let backoff = policy.base.saturating_mul(factor).min(policy.max);
        state.ejections += 1;
        state.failures = 0;
        state.ejected_until = Some(now + backoff);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_then_readmits_with_growing_backoff() {
        let policy = Ejection::default();
        let health = Health::default();
        let t0 = Instant::now();
        assert!(!health.failure(t0, &policy));
        assert!(!health.failure(t0, &policy));
        assert!(health.failure(t0, &policy), "the third failure ejects");
        assert!(health.is_ejected(t0 + Duration::from_millis(999)));
        assert!(!health.is_ejected(t0 + Duration::from_secs(1)));
        // Failing again after re-admission ejects for twice as long.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..2 {
            assert!(!health.failure(t1, &policy));
        }
        assert!(health.failure(t1, &policy));
        assert!(health.is_ejected(t1 + Duration::from_millis(1999)));
        assert!(!health.is_ejected(t1 + Duration::from_secs(2)));
    }

    #[test]
    fn the_default_policy_is_three_failures_one_second_at_most_thirty() {
        assert_eq!(
            Ejection::default(),
            Ejection { consecutive_failures: 3, base: Duration::from_secs(1), max: Duration::from_secs(30) }
        );
    }

    /// Eject `health` at `at` with `policy`, failing as often as it takes.
    fn eject(health: &Health, at: Instant, policy: &Ejection) {
        for _ in 1..policy.consecutive_failures {
            assert!(!health.failure(at, policy), "ejected too early");
        }
        assert!(health.failure(at, policy), "not ejected");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy =
            Ejection { consecutive_failures: 1, base: Duration::from_secs(1), max: Duration::from_secs(5) };
        let health = Health::default();
        let mut at = Instant::now();
        for expected in [1, 2, 4, 5, 5] {
            eject(&health, at, &policy);
            let backoff = Duration::from_secs(expected);
            assert!(health.is_ejected(at + backoff - Duration::from_millis(1)), "{expected} s");
            assert!(!health.is_ejected(at + backoff), "{expected} s");
            at += backoff;
        }
    }

    #[test]
    fn failures_while_ejected_do_not_extend_the_ejection() {
        let policy = Ejection::default();
        let health = Health::default();
        let t0 = Instant::now();
        eject(&health, t0, &policy);
        let during = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            assert!(!health.failure(during, &policy), "already ejected");
        }
        assert!(!health.is_ejected(t0 + Duration::from_secs(1)), "still readmitted on time");
    }

    #[test]
    fn a_success_after_readmission_forgets_one_ejection() {
        let ms = Duration::from_millis;
        let policy = Ejection { consecutive_failures: 1, base: ms(10), max: Duration::from_secs(1000) };
        let health = Health::default();
        // Two ejections over by now (10 ms, then 20 ms, a second ago).
        let past =
            Instant::now().checked_sub(Duration::from_secs(1)).expect("a clock a second past its epoch");
        eject(&health, past, &policy);
        eject(&health, past + ms(10), &policy);
        health.success();
        // The next ejection is as long as the second one was, not twice it.
        let now = Instant::now();
        eject(&health, now, &policy);
        assert!(health.is_ejected(now + ms(19)));
        assert!(!health.is_ejected(now + ms(20)));
    }

    #[test]
    fn a_success_during_an_ejection_does_not_end_it() {
        // An hour, so the machine cannot be slow enough to reach its end.
        let hour = Duration::from_secs(3600);
        let policy = Ejection { consecutive_failures: 3, base: hour, max: hour };
        let health = Health::default();
        let now = Instant::now();
        eject(&health, now, &policy);
        // A call already in flight when it was ejected comes back fine.
        health.success();
        assert!(health.is_ejected(now + hour / 2));
    }

    #[test]
    fn a_success_resets_the_count() {
        let policy = Ejection::default();
        let health = Health::default();
        let t0 = Instant::now();
        health.failure(t0, &policy);
        health.failure(t0, &policy);
        health.success();
        assert!(!health.failure(t0, &policy));
        assert!(!health.is_ejected(t0));
    }
}
