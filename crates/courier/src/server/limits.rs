//! Concurrency limits: a counter and a guard, no queue.
//!
//! Calls over the limit are refused with `ResourceExhausted` at once; the
//! server never builds an unbounded backlog of work it cannot start.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct Limit {
    max: usize,
    current: AtomicUsize,
}

impl Limit {
    pub(crate) fn new(max: usize) -> Arc<Limit> {
        Arc::new(Limit { max, current: AtomicUsize::new(0) })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Take a slot if one is free.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Permit(self.clone()))
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Limit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_frees_on_drop() {
        let limit = Limit::new(2);
        let a = limit.try_acquire().expect("first");
        let _b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.in_use(), 2);
        drop(a);
        assert!(limit.try_acquire().is_some());
    }
}
