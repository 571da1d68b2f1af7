//! The server's memory budget: bytes of requests being received and of
//! calls in flight, across every connection and protocol.
//!
//! Per-connection limits alone do not bound a server: 100 connections each
//! holding an unfinished 15 MiB message hold 1.5 GiB, every one of them
//! within its limits. So every request's bytes are reserved here as they
//! are received (or, where the wire declares a length up front, as soon as
//! the length is seen, before anything is buffered), and the reservation
//! travels with the call until its handler is done. A request that would
//! take the server past its budget is refused with `ResourceExhausted`;
//! what it had reserved is freed at once, and every other caller goes on
//! being served.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire};

use super::stats::Stats;
use crate::status::Status;

/// The default budget: 1 GiB, or a quarter of the memory this process may
/// use if that is less (a container's limit, or the machine's memory).
pub(crate) fn default_budget() -> usize {
    const CAP: usize = 1 << 30;
    available_memory().map_or(CAP, |bytes| (bytes / 4).clamp(64 << 20, CAP))
}

/// The memory this process may use: the cgroup v2 limit if one is set,
/// else the machine's total. `None` where neither can be read.
fn available_memory() -> Option<usize> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|limit| limit.trim().parse::<u64>().ok());
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let bytes = match (cgroup, total) {
        (Some(cgroup), Some(total)) => cgroup.min(total),
        (one, other) => one.or(other)?,
    };
    usize::try_from(bytes).ok()
}

/// The budget shared by every connection of one server.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    max: usize,
    stats: Arc<Stats>,
}

impl MemoryBudget {
    pub(crate) fn new(max: usize, stats: Arc<Stats>) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { max, stats })
    }

    /// An empty reservation, to grow as bytes arrive.
    pub(crate) fn empty(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), bytes: 0 }
    }

    /// Reserve `bytes`, or refuse (and count the refusal).
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, Status> {
        let mut reservation = self.empty();
        reservation.grow_to(bytes)?;
        Ok(reservation)
    }

    fn take(&self, bytes: usize) -> bool {
        self.stats
            .budget_in_use()
            .fetch_update(AcqRel, Acquire, |used| used.checked_add(bytes).filter(|&total| total <= self.max))
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.stats.budget_in_use().fetch_sub(bytes, AcqRel);
    }

    fn refusal(&self, wanted: usize) -> Status {
        self.stats.over_budget();
        Status::resource_exhausted(format!(
            "the server is at its memory budget ({} MiB for requests being received and calls in flight); \
             a request of {wanted} bytes does not fit now, try again later",
            self.max >> 20
        ))
    }
}

/// Bytes held against the budget; dropping it gives them back.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// How many bytes this holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hold at least `bytes` in all, taking more from the budget if needed.
    /// On refusal the reservation is unchanged.
    pub(crate) fn grow_to(&mut self, bytes: usize) -> Result<(), Status> {
        if bytes <= self.bytes {
            return Ok(());
        }
        if !self.budget.take(bytes - self.bytes) {
            return Err(self.budget.refusal(bytes));
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Hold `bytes` at most, giving the rest back.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    /// Move `bytes` of this reservation (at most all of it) into a new one,
    /// for a request that leaves a connection's buffer to become a call.
    pub(crate) fn split_off(&mut self, bytes: usize) -> Reservation {
        let moved = bytes.min(self.bytes);
        self.bytes -= moved;
        Reservation { budget: self.budget.clone(), bytes: moved }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_past_the_budget_and_given_back_on_drop() {
        let stats = Arc::new(Stats::default());
        let budget = MemoryBudget::new(100, stats.clone());
        let a = budget.reserve(60).expect("fits");
        let err = budget.reserve(50).expect_err("60 + 50 > 100");
        assert_eq!(err.code(), crate::Code::ResourceExhausted);
        assert!(err.message().contains("memory budget"), "{err}");
        let mut b = budget.reserve(40).expect("60 + 40 fits exactly");
        assert_eq!(stats.snapshot().budget_in_use, 100);
        assert!(b.grow_to(41).is_err(), "no room to grow");
        assert_eq!(b.bytes(), 40, "a refused growth changes nothing");
        drop(a);
        b.grow_to(90).expect("room again");
        let part = b.split_off(30);
        assert_eq!((b.bytes(), part.bytes()), (60, 30));
        b.shrink_to(10);
        assert_eq!(stats.snapshot().budget_in_use, 40);
        drop((b, part));
        assert_eq!(stats.snapshot().budget_in_use, 0);
        assert_eq!(stats.snapshot().over_budget, 2);
    }

    #[test]
    fn the_default_is_at_most_a_gibibyte() {
        let budget = default_budget();
        assert!((64 << 20..=1 << 30).contains(&budget), "{budget}");
    }
}
