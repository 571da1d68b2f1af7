//! When a call may be sent again, and where.
//!
//! A call is never sent twice if it may have run, unless its method is
//! idempotent. Two places retry:
//!
//! - An endpoint (one address, one protocol) sends a request again on a
//!   fresh connection when the server provably never processed it: its
//!   connection was draining before the request was queued, the request
//!   was above an error goaway's last call id, or HTTP/2 refused the
//!   stream. At most [`MAX_DRAIN_RETRIES`] times; then it counts as not
//!   sent.
//! - A discovered channel tries up to [`MAX_ATTEMPTS`] instances, in the
//!   balancer's order, judging each failed attempt with [`judge`].
//!
//! One deadline covers every attempt; it is enforced above both.

use crate::status::{Code, Status};

/// How often one call may move to a new connection because the one it
/// picked went away without processing it.
pub(crate) const MAX_DRAIN_RETRIES: usize = 3;

/// Instances tried per call at most.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// When a call may move to another instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Only if nothing was sent (the instance could not be reached).
    IfNotSent,
    /// Also if the connection was lost after sending (idempotent methods).
    IfLost,
}

/// Why an attempt on one endpoint failed without an answer from the server.
/// (A server's answer, error statuses included, is not an attempt error.)
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Nothing reached the server (it could not be reached, or it refused
    /// the request unprocessed): another instance may be tried.
    NotSent(Status),
    /// The call failed, possibly after the server started on it.
    Failed(Status),
}

impl AttemptError {
    pub(crate) fn into_status(self) -> Status {
        match self {
            AttemptError::NotSent(status) | AttemptError::Failed(status) => status,
        }
    }
}

/// What a failed attempt on one instance means for the call and for the
/// instance's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The instance could not be reached: a failure against its health
    /// (which may eject it); the call moves on.
    Unreachable,
    /// The connection was lost after the request went out: a failure
    /// against its health; the call moves on only if `move_on` (the method
    /// is idempotent), since otherwise it could run twice.
    Lost {
        /// Whether to try the next instance.
        move_on: bool,
    },
    /// The call itself failed on an instance that works (a request too
    /// large to send, say): the instance counts as healthy, the call ends.
    Failed,
}

/// Judge an attempt that failed with `error` under `retry`.
pub(crate) fn judge(error: &AttemptError, retry: Retry) -> Verdict {
    match error {
        AttemptError::NotSent(_) => Verdict::Unreachable,
        AttemptError::Failed(status) if status.code() == Code::Unavailable => {
            Verdict::Lost { move_on: retry == Retry::IfLost }
        }
        AttemptError::Failed(_) => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_sent_always_moves_on() {
        for retry in [Retry::IfNotSent, Retry::IfLost] {
            assert_eq!(
                judge(&AttemptError::NotSent(Status::unavailable("refused")), retry),
                Verdict::Unreachable
            );
            // Whatever the status says: nothing reached the server.
            let refused = AttemptError::NotSent(Status::resource_exhausted("x"));
            assert_eq!(judge(&refused, retry), Verdict::Unreachable);
        }
    }

    #[test]
    fn a_lost_connection_moves_on_only_for_idempotent_methods() {
        let lost = AttemptError::Failed(Status::unavailable("connection reset"));
        assert_eq!(judge(&lost, Retry::IfNotSent), Verdict::Lost { move_on: false });
        assert_eq!(judge(&lost, Retry::IfLost), Verdict::Lost { move_on: true });
    }

    #[test]
    fn other_failures_end_the_call_and_spare_the_instance() {
        for retry in [Retry::IfNotSent, Retry::IfLost] {
            let too_large = AttemptError::Failed(Status::resource_exhausted("too large to send"));
            assert_eq!(judge(&too_large, retry), Verdict::Failed);
        }
    }

    #[test]
    fn an_attempt_error_keeps_its_status() {
        let status = Status::unavailable("gone");
        assert_eq!(AttemptError::NotSent(status.clone()).into_status(), status);
        assert_eq!(AttemptError::Failed(status.clone()).into_status(), status);
    }
}
