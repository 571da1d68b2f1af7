//! [`Striped`]: a counter that every call adds to from whichever thread it
//! runs on, without the threads fighting over one cache line.
//!
//! Why: a breaker's successes, the budget's deposits and the channel's call
//! counts are bumped on every call, from every worker thread. One shared
//! atomic makes each bump move its cache line between cores (and evicts
//! the read-mostly flags beside it), which costs more than the rest of the
//! governance together at a few hundred thousand calls a second. Each
//! thread adds to a stripe of its own instead; the rare reader sums them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes per counter: more than the cores of most machines that run a
/// client, and threads beyond share them round robin.
const STRIPES: usize = 8;

/// One stripe on a cache line of its own (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter split into per-thread stripes.
#[derive(Debug, Default)]
pub(crate) struct Striped {
    stripes: [Stripe; STRIPES],
}

/// The next thread's stripe.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe, chosen at its first bump.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe() -> usize {
    STRIPE.with(|stripe| {
        let index = stripe.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
        stripe.set(index);
        index
    })
}

impl Striped {
    pub(crate) fn new() -> Striped {
        Striped::default()
    }

    /// Add `n`.
    pub(crate) fn add(&self, n: u64) {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub(crate) fn sum(&self) -> u64 {
        self.stripes.iter().map(|stripe| stripe.0.load(Ordering::Acquire)).fold(0, u64::wrapping_add)
    }

    /// The total so far, leaving zero behind (an add racing with it counts
    /// either now or in the next total, never twice or never).
    pub(crate) fn take(&self) -> u64 {
        self.stripes.iter().map(|stripe| stripe.0.swap(0, Ordering::AcqRel)).fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn adds_from_many_threads_are_all_counted_once() {
        let counter = Arc::new(Striped::new());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        counter.add(1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("adder");
        }
        assert_eq!(counter.sum(), 120_000);
        assert_eq!(counter.take(), 120_000);
        assert_eq!(counter.sum(), 0, "take leaves zero");
        counter.add(3);
        assert_eq!(counter.take(), 3);
    }

    #[test]
    fn stripes_sit_on_lines_of_their_own() {
        assert!(std::mem::align_of::<Stripe>() >= 128);
        assert_eq!(std::mem::size_of::<Striped>(), STRIPES * 128);
    }
}
