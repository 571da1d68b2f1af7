//! Admission: what every call must pass before its handler runs, on every
//! protocol. Written once here so the four protocol adapters cannot drift
//! apart in what they refuse or in the words they refuse it with.
//!
//! A call takes two concurrency slots, one of its connection and one of the
//! server, or, for a method given a limit of its own
//! ([`MethodLimit`], e.g. a registry's long-polling `Watch`), the two slots
//! of that method's own pools *instead*: a flood of long polls can then
//! fill only its own pools, never the capacity every other call needs.
//! None free means `ResourceExhausted` at once, never a queue.
//!
//! Request bytes are admitted separately, as they are received, against
//! the server's memory budget (see [`super::budget`]).

use std::collections::HashMap;
use std::sync::Arc;

use std::time::{Duration, Instant};

use super::adaptive::{Admitted, Limiter};
use super::limits::{Limit, Permit};
use super::stats::Stats;
use crate::status::Status;

/// A concurrency limit of its own for one method; see
/// [`ServerBuilder::method_limit`](crate::ServerBuilder::method_limit).
///
/// ```
/// use courier::{MethodLimit, Server};
/// let builder = Server::builder()
///     // At most 2,000 long polls at once, 16 per connection, none of
///     // them taking a slot registrations need.
///     .method_limit("Registry.Watch", MethodLimit::new(2_000).per_connection(16));
/// # drop(builder);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodLimit {
    max_concurrent: usize,
    per_connection: Option<usize>,
}

impl MethodLimit {
    /// At most `max_concurrent` calls of the method at once, server-wide.
    /// Per connection, the server's per-connection limit applies unless
    /// [`MethodLimit::per_connection`] sets another.
    pub fn new(max_concurrent: usize) -> MethodLimit {
        MethodLimit { max_concurrent, per_connection: None }
    }

    /// At most `limit` calls of the method at once on one connection.
    pub fn per_connection(mut self, limit: usize) -> MethodLimit {
        self.per_connection = Some(limit);
        self
    }

    /// The server-wide limit.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// The per-connection limit, if one was set.
    pub fn max_per_connection(&self) -> Option<usize> {
        self.per_connection
    }
}

/// The server's side of admission, shared by every connection.
pub(crate) struct Admission {
    server: Arc<Limit>,
    per_connection: usize,
    /// Methods with pools of their own, by full name (`Service.Method`).
    methods: HashMap<String, (Arc<Limit>, usize)>,
    stats: Arc<Stats>,
}

/// Why a call was not admitted, and when the caller may try again.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: Status,
    /// For the caller's next attempt (`grpc-retry-pushback-ms`): set when
    /// the server is shedding load, so retries back off rather than pile on.
    pub(crate) pushback: Option<Duration>,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Refusal {
        Refusal { status, pushback: None }
    }
}

/// One connection's side of admission: its own slots, and its share of
/// each method that has a limit of its own.
pub(crate) struct ConnectionSlots {
    shared: Arc<Limit>,
    methods: HashMap<String, Arc<Limit>>,
}

/// The slots a running call holds; dropping them frees both.
#[derive(Debug)]
#[must_use = "the call's slots are freed when this is dropped"]
pub(crate) struct CallPermits {
    _connection: Permit,
    _server: Permit,
    /// Its adaptive slot; dropping it reports the call's latency.
    _adaptive: Option<Admitted>,
}

impl Admission {
    pub(crate) fn new(
        max_concurrent_calls: usize,
        per_connection: usize,
        methods: &HashMap<String, MethodLimit>,
        stats: Arc<Stats>,
    ) -> Admission {
        let methods = methods
            .iter()
            .map(|(name, limit)| {
                let per_connection = limit.per_connection.unwrap_or(per_connection);
                (name.clone(), (Limit::new(limit.max_concurrent), per_connection))
            })
            .collect();
        Admission { server: Limit::new(max_concurrent_calls), per_connection, methods, stats }
    }

    /// The slots of a new connection.
    pub(crate) fn connection(&self) -> ConnectionSlots {
        ConnectionSlots {
            shared: Limit::new(self.per_connection),
            methods: self
                .methods
                .iter()
                .map(|(name, (_, per_connection))| (name.clone(), Limit::new(*per_connection)))
                .collect(),
        }
    }

    /// Take the slots a call of `method` (its full name) needs, or say why
    /// not. `adaptive` is the method's adaptive limit, if the server has
    /// them.
    pub(crate) fn admit(
        &self,
        slots: &ConnectionSlots,
        method: &str,
        adaptive: Option<Arc<Limiter>>,
    ) -> Result<CallPermits, Refusal> {
        // A server with no method limits (the common case) skips the
        // lookup entirely.
        let own = if self.methods.is_empty() {
            None
        } else {
            self.methods.get(method).zip(slots.methods.get(method))
        };
        let (server, connection, whose) = match own {
            Some(((server, _), connection)) => (server, connection, Some(method)),
            None => (&self.server, &slots.shared, None),
        };
        let Some(connection_permit) = connection.try_acquire() else {
            self.stats.call_refused();
            return Err(Status::resource_exhausted(match whose {
                Some(method) => {
                    format!(
                        "too many concurrent {method} calls on this connection (limit {})",
                        connection.max()
                    )
                }
                None => format!("too many concurrent calls on this connection (limit {})", connection.max()),
            })
            .into());
        };
        let Some(server_permit) = server.try_acquire() else {
            self.stats.call_refused();
            return Err(Status::resource_exhausted(match whose {
                Some(method) => {
                    format!("the server is at its limit of {} concurrent {method} calls", server.max())
                }
                None => format!("the server is at its limit of {} concurrent calls", server.max()),
            })
            .into());
        };
        let adaptive = match adaptive {
            None => None,
            Some(limiter) => {
                match limiter.try_admit(Instant::now()) {
                    Ok(admitted) => Some(admitted),
                    Err(limiter) => {
                        self.stats.call_shed();
                        // Come back after about one no-load call time: by
                        // then a slot has likely freed up.
                        let pushback = limiter
                            .no_load()
                            .unwrap_or(Duration::from_millis(10))
                            .max(Duration::from_millis(1));
                        return Err(Refusal {
                            status: Status::resource_exhausted(format!(
                                "the server is shedding load: {method} is at its adaptive limit of {} concurrent calls",
                                limiter.limit()
                            )),
                            pushback: Some(pushback),
                        });
                    }
                }
            }
        };
        Ok(CallPermits { _connection: connection_permit, _server: server_permit, _adaptive: adaptive })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(methods: &[(&str, MethodLimit)]) -> Admission {
        let methods = methods.iter().map(|(name, limit)| ((*name).to_owned(), *limit)).collect();
        Admission::new(3, 2, &methods, Arc::default())
    }

    #[test]
    fn calls_take_a_connection_slot_and_a_server_slot() {
        let admission = admission(&[]);
        let (a, b) = (admission.connection(), admission.connection());
        let first = admission.admit(&a, "S.M", None).expect("first");
        let _second = admission.admit(&a, "S.M", None).expect("second");
        let err = admission.admit(&a, "S.M", None).expect_err("the connection is full").status;
        assert!(err.message().contains("on this connection (limit 2)"), "{err}");
        let _third = admission.admit(&b, "S.M", None).expect("another connection");
        let err = admission.admit(&b, "S.M", None).expect_err("the server is full").status;
        assert!(err.message().contains("the server is at its limit of 3 concurrent calls"), "{err}");
        drop(first);
        assert!(admission.admit(&b, "S.M", None).is_ok(), "a freed slot is free again");
        assert_eq!(admission.stats.snapshot().calls_refused, 2);
    }

    #[test]
    fn a_method_with_its_own_limit_uses_only_its_own_pools() {
        let admission = admission(&[("Registry.Watch", MethodLimit::new(4).per_connection(1))]);
        let (a, b, c) = (admission.connection(), admission.connection(), admission.connection());
        let _watches: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|slots| admission.admit(slots, "Registry.Watch", None).expect("one watch per connection"))
            .collect();
        let err = admission.admit(&a, "Registry.Watch", None).expect_err("one per connection").status;
        assert!(
            err.message().contains("concurrent Registry.Watch calls on this connection (limit 1)"),
            "{err}"
        );
        // The watches took nothing from the shared pools.
        let _calls: Vec<_> =
            (0..2).map(|_| admission.admit(&a, "Registry.Renew", None).expect("renew")).collect();
        let _one_more = admission.admit(&b, "Registry.Renew", None).expect("the server's third slot");
        let fourth = admission.connection();
        let _last_watch = admission.admit(&fourth, "Registry.Watch", None).expect("the method's fourth slot");
        let err = admission
            .admit(&admission.connection(), "Registry.Watch", None)
            .expect_err("method pool full")
            .status;
        assert!(err.message().contains("limit of 4 concurrent Registry.Watch calls"), "{err}");
    }
}
