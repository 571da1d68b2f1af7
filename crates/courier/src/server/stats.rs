//! Counters of what a server refused and closed, and why, so an operator
//! (and a test) can tell a server protecting itself from one that is
//! merely quiet. Read them with [`Listening::stats`](crate::server::Listening::stats)
//! or [`ServerHandle::stats`](crate::ServerHandle::stats).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// The live counters, shared by every connection of one server.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    connections_open: AtomicUsize,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    accept_errors: AtomicU64,
    requests_timed_out: AtomicU64,
    calls_refused: AtomicU64,
    calls_shed: AtomicU64,
    over_budget: AtomicU64,
    budget_in_use: AtomicUsize,
}

/// A snapshot of a server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open now.
    pub connections_open: usize,
    /// Connections accepted since the server started.
    pub connections_accepted: u64,
    /// Connections closed at once because the server was at its connection
    /// cap (or out of file descriptors).
    pub connections_refused: u64,
    /// Failed `accept` calls (out of file descriptors, out of memory).
    pub accept_errors: u64,
    /// Requests whose bytes stopped arriving, or arrived too slowly, before
    /// they were complete; their connection was closed (or, on HTTP/2,
    /// their stream reset).
    pub requests_timed_out: u64,
    /// Calls refused because a concurrency limit was reached.
    pub calls_refused: u64,
    /// Of those, calls shed by the adaptive concurrency limit.
    pub calls_shed: u64,
    /// Requests refused because they would have taken the server over its
    /// memory budget.
    pub over_budget: u64,
    /// Bytes of the memory budget in use now (requests being received and
    /// calls in flight).
    pub budget_in_use: usize,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> ServerStats {
        ServerStats {
            connections_open: self.connections_open.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            requests_timed_out: self.requests_timed_out.load(Relaxed),
            calls_refused: self.calls_refused.load(Relaxed),
            calls_shed: self.calls_shed.load(Relaxed),
            over_budget: self.over_budget.load(Relaxed),
            budget_in_use: self.budget_in_use.load(Relaxed),
        }
    }

    /// A connection was accepted; it counts as open until the guard drops.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
        OpenConnection(self.clone())
    }

    pub(crate) fn connections_open(&self) -> usize {
        self.connections_open.load(Relaxed)
    }

    pub(crate) fn connection_refused(&self) -> u64 {
        self.connections_refused.fetch_add(1, Relaxed) + 1
    }

    pub(crate) fn accept_error(&self) -> u64 {
        self.accept_errors.fetch_add(1, Relaxed) + 1
    }

    pub(crate) fn request_timed_out(&self) {
        self.requests_timed_out.fetch_add(1, Relaxed);
    }

    pub(crate) fn call_refused(&self) {
        self.calls_refused.fetch_add(1, Relaxed);
    }

    /// A call refused by the adaptive limit (also counted as refused).
    pub(crate) fn call_shed(&self) {
        self.calls_refused.fetch_add(1, Relaxed);
        self.calls_shed.fetch_add(1, Relaxed);
    }

    pub(crate) fn over_budget(&self) {
        self.over_budget.fetch_add(1, Relaxed);
    }

    pub(crate) fn budget_in_use(&self) -> &AtomicUsize {
        &self.budget_in_use
    }
}

/// Counts a connection as open for as long as it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<Stats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}
