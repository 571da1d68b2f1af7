//! Per-stream flow control, sans-IO: credit the receiver grants and the
//! sender spends, counted in the wire bytes of the messages.
//!
//! The rule both ends follow: a sender may send a message whenever its
//! credit is above zero, and the message's [`cost`] is taken from the
//! credit (which may go below zero by the one message that crossed it).
//! So a receiver that grants a window of `W` holds at most `W` plus one
//! message of a stream's data, however slowly its application reads, and a
//! message bigger than the window still gets through (alone).
//!
//! The receiver grants again what its application consumed, in batches of
//! at least half the window, so a stream read steadily costs one grant per
//! half window rather than one per message. A sender that sends with no
//! credit left broke the rule: the receiver resets the stream.

/// The window each end of a stream grants the other when it opens: 64 KiB.
pub const DEFAULT_STREAM_WINDOW: u32 = 64 * 1024;

/// The most credit a sender may hold (as in HTTP/2): a grant that would
/// take it higher is a protocol error.
pub const MAX_CREDIT: i64 = (1 << 31) - 1;

/// What a message costs: its bytes on the wire, with its frame's header,
/// so that empty messages are not free (a peer could otherwise send
/// unboundedly many of them within any window).
pub fn cost(message_len: usize) -> i64 {
    i64::try_from(message_len).unwrap_or(i64::MAX / 2).saturating_add(16)
}

/// Flow control broken by the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The peer sent a message although the credit it had been granted was
    /// used up.
    #[error("the peer sent a stream message without flow-control credit")]
    NoCredit,
    /// A grant would take the credit past [`MAX_CREDIT`].
    #[error("a flow-control grant overflowed the stream's credit")]
    Overflow,
}

/// The sending end's credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendCredit {
    credit: i64,
}

impl SendCredit {
    /// The credit of a stream whose peer grants `window`.
    pub fn new(window: u32) -> SendCredit {
        SendCredit { credit: i64::from(window) }
    }

    /// Whether a message may be sent now.
    pub fn can_send(&self) -> bool {
        self.credit > 0
    }

    /// A message of `len` bytes was sent.
    pub fn sent(&mut self, len: usize) {
        self.credit = self.credit.saturating_sub(cost(len));
    }

    /// The peer granted `increment` more.
    pub fn grant(&mut self, increment: u32) -> Result<(), FlowError> {
        let credit = self.credit + i64::from(increment);
        if credit > MAX_CREDIT {
            return Err(FlowError::Overflow);
        }
        self.credit = credit;
        Ok(())
    }

    /// The credit now (below zero after a message bigger than what was
    /// left).
    pub fn credit(&self) -> i64 {
        self.credit
    }
}

/// The receiving end's view: what the peer may still send, and what the
/// application consumed that has not been granted back yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvWindow {
    window: u32,
    /// The peer's credit as the receiver reckons it.
    peer_credit: i64,
    /// Bytes received and not yet consumed by the application.
    buffered: i64,
    /// Consumed and not yet granted back.
    consumed: i64,
}

impl RecvWindow {
    /// A receiver that grants `window` (at least 1 KiB).
    pub fn new(window: u32) -> RecvWindow {
        let window = window.max(1024);
        RecvWindow { window, peer_credit: i64::from(window), buffered: 0, consumed: 0 }
    }

    /// The window granted at the start.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// A message of `len` bytes arrived: refused if the peer had no credit
    /// left for it.
    pub fn received(&mut self, len: usize) -> Result<(), FlowError> {
        if self.peer_credit <= 0 {
            return Err(FlowError::NoCredit);
        }
        self.peer_credit = self.peer_credit.saturating_sub(cost(len));
        self.buffered = self.buffered.saturating_add(cost(len));
        Ok(())
    }

    /// The application took a message of `len` bytes; returns the grant
    /// to send the peer, once at least half the window has been consumed.
    pub fn consumed(&mut self, len: usize) -> Option<u32> {
        let cost = cost(len).min(self.buffered);
        self.buffered -= cost;
        self.consumed += cost;
        if self.consumed < i64::from(self.window / 2) {
            return None;
        }
        // The peer's credit, what is buffered and what was consumed always
        // add up to the window: granting what was consumed keeps it so.
        let grant = u32::try_from(self.consumed).unwrap_or(u32::MAX);
        self.consumed -= i64::from(grant);
        self.peer_credit += i64::from(grant);
        (grant > 0).then_some(grant)
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> i64 {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_sender_may_overshoot_by_one_message_and_then_waits() {
        let mut send = SendCredit::new(100);
        assert!(send.can_send());
        send.sent(50);
        assert!(send.can_send(), "34 left");
        send.sent(1_000);
        assert!(!send.can_send(), "the big message went out alone");
        send.grant(2_000).expect("grant");
        assert!(send.can_send());
        assert_eq!(send.grant(u32::MAX), Err(FlowError::Overflow));
    }

    #[test]
    fn empty_messages_are_not_free() {
        let mut recv = RecvWindow::new(1024);
        let mut accepted = 0;
        while recv.received(0).is_ok() {
            accepted += 1;
        }
        assert_eq!(accepted, 1024 / 16, "each costs its frame header");
    }

    #[test]
    fn grants_come_in_batches_of_half_the_window() {
        let mut recv = RecvWindow::new(64 * 1024);
        for _ in 0..100 {
            recv.received(100).expect("within the window");
        }
        let grants: Vec<u32> = (0..100).filter_map(|_| recv.consumed(100)).collect();
        assert!(grants.is_empty(), "11,600 bytes is under half the window: {grants:?}");
        for _ in 0..400 {
            recv.received(100).expect("within the window");
        }
        let grants: Vec<u32> = (0..400).filter_map(|_| recv.consumed(100)).collect();
        assert_eq!(grants.len(), 1, "{grants:?}");
        assert!(grants[0] >= 32 * 1024);
    }

    #[test]
    fn a_message_past_the_credit_is_refused() {
        let mut recv = RecvWindow::new(1024);
        recv.received(2_000).expect("the credit was above zero");
        assert_eq!(recv.received(1), Err(FlowError::NoCredit));
    }

    proptest! {
        /// A sender that follows the rule is never refused, and what the
        /// receiver holds unconsumed stays within the window plus one
        /// message, whatever the message sizes and the order in which the
        /// application consumes and grants arrive.
        #[test]
        fn the_rule_bounds_the_buffer(
            window in 1024u32..200_000,
            sizes in proptest::collection::vec(0usize..100_000, 1..200),
            reads in proptest::collection::vec(any::<bool>(), 1..400),
        ) {
            let mut send = SendCredit::new(window);
            let mut recv = RecvWindow::new(window);
            let mut queue = std::collections::VecDeque::new();
            let mut grants = std::collections::VecDeque::new();
            let mut next = sizes.iter().copied().peekable();
            let largest = sizes.iter().copied().max().unwrap_or(0);
            for read in reads.iter().copied().chain(std::iter::repeat_n(true, 1000)) {
                if let Some(grant) = grants.pop_front() {
                    send.grant(grant).expect("never overflows");
                }
                if !read && send.can_send() && let Some(len) = next.next() {
                    send.sent(len);
                    prop_assert!(recv.received(len).is_ok());
                    queue.push_back(len);
                } else if read && let Some(len) = queue.pop_front() {
                    if let Some(grant) = recv.consumed(len) {
                        grants.push_back(grant);
                    }
                } else if send.can_send() && let Some(len) = next.next() {
                    send.sent(len);
                    prop_assert!(recv.received(len).is_ok());
                    queue.push_back(len);
                }
                prop_assert!(recv.buffered() <= i64::from(window) + cost(largest));
                if next.peek().is_none() && queue.is_empty() {
                    break;
                }
            }
            prop_assert!(next.peek().is_none(), "every message got through");
        }
    }
}
