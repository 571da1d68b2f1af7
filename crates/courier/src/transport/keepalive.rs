//! Keepalive: ping an idle peer, declare it dead if it stays silent.
//!
//! Sans-IO: the connection tells it when bytes last arrived and asks what to
//! do at each deadline. A peer that goes silent is detected within two
//! intervals of its last sign of life: one interval of silence before the
//! ping, one more for the pong.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing to do; sleep until [`Keepalive::deadline`].
    Wait,
    /// Send a ping now.
    SendPing,
    /// The peer has not answered a ping within an interval: close.
    Dead,
}

#[derive(Debug)]
pub(crate) struct Keepalive {
    interval: Duration,
    ping_sent: Option<Instant>,
    deadline: Instant,
}

impl Keepalive {
    pub(crate) fn new(interval: Duration, now: Instant) -> Keepalive {
        Keepalive { interval, ping_sent: None, deadline: now + interval }
    }

    /// When [`Keepalive::poll`] should next be called.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Decide what to do at `now`, given when bytes last arrived.
    pub(crate) fn poll(&mut self, now: Instant, last_read: Instant) -> Action {
        if let Some(sent) = self.ping_sent {
            if last_read >= sent {
                // Anything received after the ping proves the peer alive.
                self.ping_sent = None;
            } else if now >= sent + self.interval {
                return Action::Dead;
            } else {
                self.deadline = sent + self.interval;
                return Action::Wait;
            }
        }
        let idle_until = last_read + self.interval;
        if now >= idle_until {
            self.ping_sent = Some(now);
            self.deadline = now + self.interval;
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

    #[test]
    fn silent_peer_is_dead_within_two_intervals_of_last_read() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        assert_eq!(ka.deadline(), t0 + I);
        assert_eq!(ka.poll(t0 + I, t0), Action::SendPing);
        assert_eq!(ka.deadline(), t0 + 2 * I);
        assert_eq!(ka.poll(t0 + I + I / 2, t0), Action::Wait);
        assert_eq!(ka.poll(t0 + 2 * I, t0), Action::Dead);
    }

    #[test]
    fn traffic_postpones_the_ping_and_a_pong_clears_it() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(I, t0);
        // Bytes arrived at t0+5s: no ping yet, wait until t0+15s.
        assert_eq!(ka.poll(t0 + I, t0 + I / 2), Action::Wait);
        assert_eq!(ka.deadline(), t0 + I + I / 2);
        assert_eq!(ka.poll(t0 + I + I / 2, t0 + I / 2), Action::SendPing);
        // The pong arrives one second later.
        let pong = t0 + I + I / 2 + Duration::from_secs(1);
        assert_eq!(ka.poll(t0 + 2 * I + I / 2, pong), Action::Wait);
        assert_eq!(ka.deadline(), pong + I);
    }
}
