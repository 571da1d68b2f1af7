//! Keepalive: ping an idle peer, declare it dead if it stays silent.
//!
//! Sans-IO: the connection reports when bytes last arrived and how far its
//! writer has got, and asks what to do at each deadline.
//!
//! - After an interval with nothing received, send a ping.
//! - The pong deadline (one more interval) starts when the ping actually
//!   leaves our write queue, not when it is queued: a ping queued behind a
//!   large response must not make a slow-but-alive reader look dead.
//! - Anything received after the ping was queued proves the peer alive, and
//!   so do bytes the socket takes after the ping was written (a peer that
//!   keeps reading is alive even while we are too busy to read its pong).
//! - A ping still stuck in the queue while the writer has made no progress
//!   and the peer has said nothing for an interval means a dead peer too.
//!
//! An idle peer that goes silent is declared dead within two intervals of
//! its last sign of life.

use std::time::{Duration, Instant};

use super::write_queue::{Progress, WriteQueue};
use crate::protocol::native::{FrameKind, PING_LEN, encode_ping};

/// The body of keepalive pings.
const KEEPALIVE_PING: [u8; PING_LEN] = *b"ckeepalv";

/// Why keepalive ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The peer stopped answering.
    Dead,
    /// The write queue is closed, so no ping can be sent.
    QueueClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing to do; sleep until [`Keepalive::deadline`].
    Wait,
    /// Send a ping now and report its queue position with
    /// [`Keepalive::ping_queued`].
    SendPing,
    /// The peer is gone: close.
    Dead,
}

#[derive(Debug, Clone, Copy)]
struct Ping {
    queued_at: Instant,
    /// Queue position just past the ping.
    position: u64,
    /// When we first saw it written.
    written_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Keepalive {
    interval: Duration,
    ping: Option<Ping>,
    deadline: Instant,
}

/// `at + by`, or a far-off instant if that overflows.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by).unwrap_or_else(|| at + Duration::from_secs(86_400 * 365))
}

impl Keepalive {
    pub(crate) fn new(interval: Duration, now: Instant) -> Keepalive {
        Keepalive { interval, ping: None, deadline: later(now, interval) }
    }

    /// When [`Keepalive::poll`] should next be called.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The ping asked for by [`Action::SendPing`] was queued; `position` is
    /// the queue position just past it.
    pub(crate) fn ping_queued(&mut self, now: Instant, position: u64) {
        self.ping = Some(Ping { queued_at: now, position, written_at: None });
        self.deadline = later(now, self.interval);
    }

    /// One step for a live connection: decide, send a ping if one is due,
    /// and return when to call again.
    pub(crate) fn tick(&mut self, last_read: Instant, queue: &WriteQueue) -> Result<Instant, Verdict> {
        let now = Instant::now();
        match self.poll(now, last_read, queue.progress()) {
            Action::Wait => {}
            Action::SendPing => {
                let position = queue
                    .push_now_tracked(|buf| encode_ping(buf, FrameKind::Ping, KEEPALIVE_PING))
                    .map_err(|_| Verdict::QueueClosed)?;
                self.ping_queued(now, position);
            }
            Action::Dead => return Err(Verdict::Dead),
        }
        Ok(self.deadline)
    }

    /// Decide what to do at `now`.
    pub(crate) fn poll(&mut self, now: Instant, last_read: Instant, writer: Progress) -> Action {
        if let Some(ping) = &mut self.ping {
            if last_read >= ping.queued_at {
                self.ping = None;
            } else {
                if ping.written_at.is_none() && writer.written >= ping.position {
                    // It left the queue no later than the last progress.
                    ping.written_at = Some(writer.last_progress.min(now));
                }
                match ping.written_at {
                    Some(written_at)
                        if writer.written > ping.position && writer.last_progress > written_at =>
                    {
                        // The peer kept taking bytes after our ping: alive.
                        self.ping = None;
                    }
                    Some(written_at) => {
                        let pong_deadline = later(written_at, self.interval);
                        if now >= pong_deadline {
                            return Action::Dead;
                        }
                        self.deadline = pong_deadline;
                        return Action::Wait;
                    }
                    None => {
                        // Still queued behind other frames. Alive as long as
                        // the peer keeps taking our bytes.
                        let since = writer.last_progress.max(last_read).max(ping.queued_at);
                        let stalled_until = later(since, self.interval);
                        if now >= stalled_until {
                            return Action::Dead;
                        }
                        self.deadline = stalled_until;
                        return Action::Wait;
                    }
                }
            }
        }
        let idle_until = later(last_read, self.interval);
        if now >= idle_until {
            Action::SendPing
        } else {
            self.deadline = idle_until;
            Action::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(10);

    fn written(bytes: u64, at: Instant) -> Progress {
        Progress { written: bytes, last_progress: at }
    }

    #[test]
    fn silent_idle_peer_is_dead_within_two_intervals_of_last_read() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.deadline(), t0 + I);
        assert_eq!(ka.poll(t0 + I, t0, written(0, t0)), Action::SendPing);
        ka.ping_queued(t0 + I, 24);
        // Written at once.
        assert_eq!(ka.poll(t0 + I + I / 2, t0, written(24, t0 + I)), Action::Wait);
        assert_eq!(ka.deadline(), t0 + 2 * I);
        assert_eq!(ka.poll(t0 + 2 * I, t0, written(24, t0 + I)), Action::Dead);
    }

    #[test]
    fn traffic_postpones_the_ping_and_a_pong_clears_it() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.poll(t0 + I, t0 + I / 2, written(0, t0)), Action::Wait);
        assert_eq!(ka.deadline(), t0 + I + I / 2);
        assert_eq!(ka.poll(t0 + I + I / 2, t0 + I / 2, written(0, t0)), Action::SendPing);
        ka.ping_queued(t0 + I + I / 2, 24);
        let pong = t0 + I + I / 2 + Duration::from_secs(1);
        assert_eq!(ka.poll(t0 + 2 * I + I / 2, pong, written(24, t0 + I + I / 2)), Action::Wait);
        assert_eq!(ka.deadline(), pong + I);
    }

    #[test]
    fn a_ping_queued_behind_a_long_write_does_not_kill_a_reading_peer() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.poll(t0 + I, t0, written(0, t0)), Action::SendPing);
        // The ping sits behind 16 MiB that the peer is slowly reading.
        ka.ping_queued(t0 + I, 16 << 20);
        for step in 1..=5u32 {
            let now = t0 + I + step * I;
            let progress = written(u64::from(step) << 20, now - Duration::from_secs(1));
            assert_eq!(ka.poll(now, t0, progress), Action::Wait, "step {step}");
        }
        // Finally written; the pong deadline starts now.
        let out = t0 + 7 * I;
        assert_eq!(ka.poll(out, t0, written(16 << 20, out)), Action::Wait);
        assert_eq!(ka.poll(out + I, t0, written(16 << 20, out)), Action::Dead);
    }

    #[test]
    fn a_peer_still_taking_our_bytes_is_alive_without_a_pong() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.poll(t0 + I, t0, written(0, t0)), Action::SendPing);
        ka.ping_queued(t0 + I, 24);
        // Written at once, then more bytes keep going out: no pong is read
        // (we are backed up), but the peer is plainly reading.
        assert_eq!(ka.poll(t0 + I + I / 2, t0, written(24, t0 + I)), Action::Wait);
        assert_eq!(ka.poll(t0 + 2 * I, t0, written(10_000, t0 + 2 * I - I / 10)), Action::SendPing);
    }

    #[test]
    fn a_stuck_writer_and_a_silent_peer_mean_dead() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.poll(t0 + I, t0, written(100, t0)), Action::SendPing);
        ka.ping_queued(t0 + I, 1_000_000);
        // Right after queueing, a stale write time is not yet a verdict.
        assert_eq!(ka.poll(t0 + I, t0, written(100, t0)), Action::Wait);
        assert_eq!(ka.poll(t0 + I + I / 2, t0, written(100, t0)), Action::Wait);
        assert_eq!(ka.poll(t0 + 2 * I, t0, written(100, t0)), Action::Dead);
    }

    #[test]
    fn huge_intervals_do_not_overflow() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(Duration::MAX, t0);
        assert_eq!(ka.poll(t0, t0, written(0, t0)), Action::Wait);
        // Such an interval means no keepalive: the first ping is further off
        // than any connection lasts.
        assert!(ka.deadline() >= t0 + Duration::from_secs(86_400 * 300), "{:?}", ka.deadline() - t0);
    }

    #[test]
    fn a_ping_flushed_with_more_bytes_in_one_write_is_not_a_sign_of_life() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.poll(t0 + I, t0, written(0, t0)), Action::SendPing);
        ka.ping_queued(t0 + I, 24);
        // The socket took the ping and the bytes after it at once: nothing
        // was taken after the ping was written, so a pong is still due.
        let flushed = t0 + I + Duration::from_secs(1);
        assert_eq!(ka.poll(flushed, t0, written(5_000, flushed)), Action::Wait);
        assert_eq!(ka.deadline(), flushed + I);
        assert_eq!(ka.poll(flushed + I, t0, written(5_000, flushed)), Action::Dead);
    }

    #[test]
    fn only_bytes_beyond_the_ping_prove_the_peer_alive() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.poll(t0 + I, t0, written(0, t0)), Action::SendPing);
        ka.ping_queued(t0 + I, 24);
        // The writer stamped its progress just after `tick` read the clock,
        // so the write looks later than the moment it was first seen.
        let seen = t0 + I + Duration::from_secs(1);
        let stamped = seen + Duration::from_millis(1);
        assert_eq!(ka.poll(seen, t0, written(24, stamped)), Action::Wait);
        // Nothing beyond the ping has left since: it still waits for a pong.
        assert_eq!(ka.poll(seen + I / 2, t0, written(24, stamped)), Action::Wait);
        assert_eq!(ka.poll(seen + I, t0, written(24, stamped)), Action::Dead);
    }

    #[test]
    fn a_queued_ping_behind_a_stalled_writer_counts_from_the_latest_sign_of_life() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.poll(t0 + I, t0, written(0, t0)), Action::SendPing);
        ka.ping_queued(t0 + I, 1_000);
        // The writer last moved after the ping was queued: count from there.
        let moved = t0 + I + Duration::from_secs(3);
        assert_eq!(ka.poll(moved, t0, written(500, moved)), Action::Wait);
        assert_eq!(ka.deadline(), moved + I);
        assert_eq!(ka.poll(moved + I - Duration::from_millis(1), t0, written(500, moved)), Action::Wait);
        assert_eq!(ka.poll(moved + I, t0, written(500, moved)), Action::Dead);
    }
}
