//! [`Fallbacks`]: per method, an answer to give when the call fails (Dubbo's
//! mock, Sentinel's fallback), and forced degradation: skip the call and
//! answer the fallback at once, switched on and off while running.
//!
//! A fallback answers failures of the system, not of the service: a call
//! that could not be made or answered in time (`Unavailable`,
//! `DeadlineExceeded`, `ResourceExhausted`, `Internal`, `Unknown`,
//! `Aborted`, `DataLoss`). A service's own error (a typed application
//! error) and the answers that say the caller asked for something wrong
//! (`InvalidArgument`, `NotFound`, `PermissionDenied`, ...) pass through:
//! hiding those behind a default would hide a bug.
//!
//! It is a client [`Layer`](crate::client::Layer) (the layer itself is in
//! `client/fallback.rs`, so that this module needs nothing of the client): add it to a channel with
//! [`ChannelBuilder::layer`](crate::client::ChannelBuilder::layer) or
//! [`DiscoverBuilder::layer`](crate::client::DiscoverBuilder::layer), first
//! (outermost), so that it sees a call's outcome after every retry.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::BytesMut;
use serde::Serialize;

use crate::codec::Codec;
use crate::status::{Code, Status};

/// Encodes a method's fallback answer in the codec the call is made in.
type Answer = dyn Fn(Codec) -> Result<bytes::Bytes, Status> + Send + Sync;

/// Fallback answers by method, and the switches that force them; see the
/// module docs.
///
/// ```
/// use std::sync::Arc;
/// use courier::Channel;
/// use courier::resilience::Fallbacks;
///
/// // When `Catalog.Recommend` fails, answer an empty list.
/// let fallbacks = Arc::new(Fallbacks::new().value("Catalog.Recommend", Vec::<String>::new()));
/// let channel = Channel::builder("127.0.0.1:9000").layer(fallbacks.clone()).build_lazy();
/// // Later, under load: stop calling it at all, and answer the fallback.
/// fallbacks.degrade("Catalog.Recommend", true).expect("a method with a fallback");
/// # drop(channel);
/// ```
#[derive(Default)]
pub struct Fallbacks {
    methods: HashMap<String, Entry>,
}

pub(crate) struct Entry {
    answer: Arc<Answer>,
    /// Forced degradation: answer without calling.
    forced: AtomicBool,
    /// Calls answered by the fallback.
    served: AtomicU64,
}

/// [`Fallbacks::degrade`] was asked about a method that has no fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` has no fallback to degrade to")]
pub struct NoFallback(pub String);

impl fmt::Debug for Fallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<(&str, bool)> = self
            .methods
            .iter()
            .map(|(name, entry)| (name.as_str(), entry.forced.load(Ordering::Relaxed)))
            .collect();
        methods.sort_unstable();
        f.debug_struct("Fallbacks").field("methods (degraded)", &methods).finish()
    }
}

impl Fallbacks {
    /// No fallbacks yet.
    pub fn new() -> Fallbacks {
        Fallbacks::default()
    }

    /// When `method` (`Service.Method`) fails, answer `value`, encoded in
    /// the call's codec (binary or JSON; see [`Fallbacks::with`] for
    /// protobuf messages).
    #[must_use]
    pub fn value<T: Serialize + Send + Sync + 'static>(
        self,
        method: impl Into<String>,
        value: T,
    ) -> Fallbacks {
        let method = method.into();
        let name = method.clone();
        self.with(method, move |codec| {
            let mut buf = BytesMut::new();
            codec.encode(&value, &mut buf).map_err(|err| {
                Status::internal(format!("the fallback of {name} does not encode in {codec}: {err}"))
            })?;
            Ok(buf.freeze())
        })
    }

    /// When `method` fails, answer what `answer` encodes in the given codec.
    #[must_use]
    pub fn with(
        mut self,
        method: impl Into<String>,
        answer: impl Fn(Codec) -> Result<bytes::Bytes, Status> + Send + Sync + 'static,
    ) -> Fallbacks {
        let entry =
            Entry { answer: Arc::new(answer), forced: AtomicBool::new(false), served: AtomicU64::new(0) };
        self.methods.insert(method.into(), entry);
        self
    }

    /// Force degradation of `method` on or off: while on, its calls are not
    /// made and get the fallback at once. Takes effect for the next call.
    pub fn degrade(&self, method: &str, on: bool) -> Result<(), NoFallback> {
        let entry = self.methods.get(method).ok_or_else(|| NoFallback(method.to_owned()))?;
        entry.forced.store(on, Ordering::Relaxed);
        tracing::info!(method, degraded = on, "forced degradation switched");
        Ok(())
    }

    /// Whether `method` is degraded by force.
    pub fn is_degraded(&self, method: &str) -> bool {
        self.methods.get(method).is_some_and(|entry| entry.forced.load(Ordering::Relaxed))
    }

    /// How many calls of `method` the fallback has answered.
    pub fn served(&self, method: &str) -> u64 {
        self.methods.get(method).map_or(0, |entry| entry.served.load(Ordering::Relaxed))
    }
}

/// Whether a failure is the system's (a fallback answers it) rather than
/// the service's or the caller's (it passes through).
pub(crate) fn is_system_failure(status: &Status) -> bool {
    if status.is_application_error() {
        return false;
    }
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::Aborted
            | Code::DataLoss
    )
}

impl Fallbacks {
    /// The fallback of `method`, if it has one.
    pub(crate) fn of(&self, method: &str) -> Option<&Entry> {
        self.methods.get(method)
    }
}

impl Entry {
    /// Whether calls are skipped and answered by the fallback.
    pub(crate) fn forced(&self) -> bool {
        self.forced.load(Ordering::Relaxed)
    }

    /// The fallback answer, encoded in `codec`, counted.
    pub(crate) fn answer(&self, codec: Codec) -> Result<bytes::Bytes, Status> {
        self.served.fetch_add(1, Ordering::Relaxed);
        (self.answer)(codec)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn system_failures_fall_back_and_the_services_own_errors_do_not() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::ResourceExhausted, Code::Internal] {
            assert!(is_system_failure(&Status::new(code, "down")), "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::NotFound, Code::PermissionDenied, Code::Cancelled] {
            assert!(!is_system_failure(&Status::new(code, "asked wrong")), "{code:?}");
        }
        let business = Status::application(Code::Unknown, "division by zero", Bytes::from_static(b"\"Div\""));
        assert!(!is_system_failure(&business));
    }

    #[test]
    fn degrading_needs_a_fallback_and_is_reported() {
        let fallbacks = Fallbacks::new().value("S.M", 7u32);
        assert_eq!(fallbacks.degrade("S.Other", true), Err(NoFallback("S.Other".into())));
        assert!(!fallbacks.is_degraded("S.M"));
        fallbacks.degrade("S.M", true).expect("has a fallback");
        assert!(fallbacks.is_degraded("S.M"));
        let entry = &fallbacks.methods["S.M"];
        let answer = entry.answer(Codec::Json).expect("the fallback");
        assert_eq!(&answer[..], b"7");
        assert_eq!(fallbacks.served("S.M"), 1);
    }
}
