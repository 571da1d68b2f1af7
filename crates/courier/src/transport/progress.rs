//! Progress of a partly received request, sans-IO.
//!
//! Idleness *between* requests is fine (Go's net/rpc clients hold idle
//! connections open indefinitely, and keepalive pings tell a live idle peer
//! from a dead one). A request that has *started* is another matter: a peer
//! that sends half of one and then nothing, or one byte every few seconds,
//! holds a connection, buffers and budget for as long as it likes. So, as
//! Apache's mod_reqtimeout does, a started request must keep arriving:
//! - no gap of more than `stall` (20 s by default) without a byte, and
//! - all of it within `timeout` (60 s), extended by one second for every
//!   `min_rate` bytes received (32 KiB/s), so a large request on a slow but
//!   honest link still arrives, while a trickle is cut off at about 60 s.

use std::time::{Duration, Instant};

/// How long a started request may take to arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestTimeouts {
    /// The longest gap between two reads of one request.
    pub(crate) stall: Duration,
    /// The time a whole request may take, before the rate allowance.
    pub(crate) timeout: Duration,
    /// Bytes per second that earn one more second beyond `timeout`.
    pub(crate) min_rate: u64,
}

impl Default for RequestTimeouts {
    fn default() -> RequestTimeouts {
        RequestTimeouts {
            stall: Duration::from_secs(20),
            timeout: Duration::from_secs(60),
            min_rate: 32 * 1024,
        }
    }
}

/// Why a started request was given up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Overdue {
    /// No bytes arrived for the stall timeout.
    #[error("no byte of the request arrived for {}", secs(*waited))]
    Stalled {
        /// How long nothing arrived.
        waited: Duration,
    },
    /// Bytes kept arriving, but too slowly.
    #[error("the request was still incomplete after {} ({bytes} bytes received, slower than the minimum rate)", secs(*elapsed))]
    TooSlow {
        /// Since the request started.
        elapsed: Duration,
        /// Bytes of it received.
        bytes: u64,
    },
}

fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// The progress of the request being received on one connection (or
/// stream), if any.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    /// When the request started, and its bytes so far; `None` between
    /// requests.
    current: Option<Current>,
}

#[derive(Clone, Copy, Debug)]
struct Current {
    started: Instant,
    last: Instant,
    bytes: u64,
}

impl Progress {
    /// A request is in progress from `now`, unless one already was.
    pub(crate) fn start(&mut self, now: Instant) {
        if self.current.is_none() {
            self.current = Some(Current { started: now, last: now, bytes: 0 });
        }
    }

    /// `bytes` of the request in progress arrived at `now`.
    pub(crate) fn received(&mut self, bytes: usize, now: Instant) {
        if let Some(current) = &mut self.current
            && bytes > 0
        {
            current.last = now;
            current.bytes = current.bytes.saturating_add(bytes as u64);
        }
    }

    /// No request is in progress any more (it arrived, or the wait was not
    /// the peer's doing).
    pub(crate) fn complete(&mut self) {
        self.current = None;
    }

    #[cfg_attr(not(feature = "http-json"), allow(dead_code))]
    pub(crate) fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// When the request in progress becomes overdue, if one is.
    pub(crate) fn deadline(&self, timeouts: &RequestTimeouts) -> Option<Instant> {
        let current = self.current?;
        let stall = current.last.checked_add(timeouts.stall);
        let whole = current.started.checked_add(allowed(current.bytes, timeouts));
        // A deadline past what `Instant` can hold never comes.
        match (stall, whole) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (one, other) => one.or(other),
        }
    }

    /// Whether the request in progress is overdue at `now`.
    pub(crate) fn check(&self, now: Instant, timeouts: &RequestTimeouts) -> Result<(), Overdue> {
        let Some(current) = self.current else { return Ok(()) };
        let waited = now.saturating_duration_since(current.last);
        if waited >= timeouts.stall {
            return Err(Overdue::Stalled { waited });
        }
        let elapsed = now.saturating_duration_since(current.started);
        if elapsed >= allowed(current.bytes, timeouts) {
            return Err(Overdue::TooSlow { elapsed, bytes: current.bytes });
        }
        Ok(())
    }
}

/// The time a request of `bytes` so far may take in all.
fn allowed(bytes: u64, timeouts: &RequestTimeouts) -> Duration {
    let earned = bytes.checked_div(timeouts.min_rate).unwrap_or(0);
    timeouts.timeout.saturating_add(Duration::from_secs(earned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: RequestTimeouts =
        RequestTimeouts { stall: Duration::from_secs(20), timeout: Duration::from_secs(60), min_rate: 1000 };

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn the_defaults_are_20_s_without_a_byte_and_60_s_for_a_trickle() {
        let defaults = RequestTimeouts::default();
        assert_eq!((defaults.stall, defaults.timeout), (Duration::from_secs(20), Duration::from_secs(60)));
        let t0 = Instant::now();
        let mut trickle = Progress::default();
        trickle.start(t0);
        for s in (10..=60).step_by(10) {
            trickle.received(1, at(t0, s));
        }
        assert!(trickle.check(at(t0, 60), &defaults).is_err(), "a trickle is cut off at 60 s");
    }

    #[test]
    fn idle_between_requests_is_never_overdue() {
        let progress = Progress::default();
        assert!(progress.deadline(&T).is_none());
        assert_eq!(progress.check(Instant::now() + Duration::from_secs(86_400), &T), Ok(()));
    }

    #[test]
    fn a_started_request_that_stops_is_overdue_after_the_stall_timeout() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.start(t0);
        progress.received(10, at(t0, 5));
        assert_eq!(progress.deadline(&T), Some(at(t0, 25)));
        assert_eq!(progress.check(at(t0, 24), &T), Ok(()));
        assert_eq!(progress.check(at(t0, 25), &T), Err(Overdue::Stalled { waited: Duration::from_secs(20) }));
    }

    #[test]
    fn a_trickle_is_cut_off_near_the_timeout_and_an_honest_slow_upload_is_not() {
        let t0 = Instant::now();
        let mut trickle = Progress::default();
        trickle.start(t0);
        for s in (10..=60).step_by(10) {
            trickle.received(1, at(t0, s));
        }
        let err = trickle.check(at(t0, 60), &T).expect_err("60 s for 6 bytes");
        assert!(matches!(err, Overdue::TooSlow { bytes: 6, .. }), "{err}");
        assert!(err.to_string().contains("still incomplete after 60.0 s"), "{err}");

        // 2,000 bytes a second: each second earns two more.
        let mut upload = Progress::default();
        upload.start(t0);
        for s in 1..=100 {
            upload.received(2000, at(t0, s));
        }
        assert_eq!(upload.check(at(t0, 100), &T), Ok(()), "200 kB earned 200 s beyond the 60");
    }

    #[test]
    fn completing_resets_and_the_next_request_starts_afresh() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.start(t0);
        progress.start(at(t0, 10)); // still the same request
        assert_eq!(progress.deadline(&T), Some(at(t0, 20)));
        progress.complete();
        assert!(!progress.in_progress());
        progress.start(at(t0, 100));
        assert_eq!(progress.check(at(t0, 110), &T), Ok(()));
    }
}
