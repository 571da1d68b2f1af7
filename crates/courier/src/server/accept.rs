//! The listener loop: take connections up to the server's cap, close the
//! rest at once, and keep going when the process runs out of descriptors.
//!
//! At the cap, a new connection is accepted and closed straight away
//! rather than left in the kernel's listen queue, where its client would
//! hang until its own timeout: a clear refusal is cheaper for both sides.
//! The cap sits below the process's open-file limit, so the connections
//! already open keep being served (their handlers can still open files and
//! sockets). If descriptors run out anyway (`EMFILE`), one descriptor kept
//! in reserve is given up to accept and close the waiting connection, as
//! nginx and libuv do; then accepting pauses briefly instead of spinning.
//! Every refusal is counted, and logged at most every few seconds.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use super::stats::Stats;

/// The cap on connections when the open-file limit does not lower it.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How often a repeating accept problem is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The pause after running out of descriptors or memory.
const BACKOFF: Duration = Duration::from_millis(50);

/// The default connection cap: 10,000, or nine tenths of the open-file
/// limit (keeping at least 32 descriptors for everything else) if lower.
pub(crate) fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit.and_then(|limit| usize::try_from(limit).ok()) {
        Some(files) => {
            let spare = (files / 10).max(32);
            files.saturating_sub(spare).clamp(1, DEFAULT_MAX_CONNECTIONS)
        }
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

/// What a failed `accept` means.
enum AcceptError {
    /// The connection died before we took it; nothing to do.
    PeerGone,
    /// Descriptors ran out; retry after a pause.
    OutOfFiles,
    /// Memory or buffers ran out; retry after a pause.
    OutOfMemory,
    /// The listener itself is broken.
    Fatal,
}

fn classify(err: &io::Error) -> AcceptError {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock | TimedOut => {
            AcceptError::PeerGone
        }
        OutOfMemory => AcceptError::OutOfMemory,
        // EMFILE (24) and ENFILE (23) have no stable ErrorKind.
        _ if matches!(err.raw_os_error(), Some(23 | 24)) => AcceptError::OutOfFiles,
        // ENOBUFS (105), ENOMEM (12).
        _ if matches!(err.raw_os_error(), Some(105 | 12)) => AcceptError::OutOfMemory,
        _ => AcceptError::Fatal,
    }
}

/// A warning that repeats at most every [`LOG_EVERY`], saying how many
/// times it happened in between.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// `Some(times suppressed since the last log)` if it is time to log.
    fn due(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now.duration_since(last) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Accepts connections for one server.
pub(crate) struct Acceptor {
    listener: TcpListener,
    max_connections: usize,
    stats: Arc<Stats>,
    /// A descriptor held back to accept-and-close with when none are left.
    reserve: Option<std::fs::File>,
    at_cap: Throttled,
    failing: Throttled,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, max_connections: usize, stats: Arc<Stats>) -> Acceptor {
        Acceptor {
            listener,
            max_connections,
            stats,
            reserve: reserve_descriptor(),
            at_cap: Throttled::default(),
            failing: Throttled::default(),
        }
    }

    /// The next connection to serve. Connections over the cap, and
    /// transient failures, are dealt with here; an error means the listener
    /// is broken. Cancel-safe.
    pub(crate) async fn next(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => match classify(&err) {
                    AcceptError::PeerGone => {
                        tracing::debug!(%err, "accept: the peer went away");
                        continue;
                    }
                    AcceptError::OutOfFiles => {
                        self.out_of_files(&err).await;
                        continue;
                    }
                    AcceptError::OutOfMemory => {
                        let count = self.stats.accept_error();
                        if let Some(suppressed) = self.failing.due(Instant::now()) {
                            tracing::warn!(%err, count, suppressed, "accept failed: out of memory; retrying shortly");
                        }
                        tokio::time::sleep(BACKOFF).await;
                        continue;
                    }
                    AcceptError::Fatal => return Err(err),
                },
            };
            if self.stats.connections_open() >= self.max_connections {
                // Closed at once: the client learns now, not at its timeout.
                drop(stream);
                let refused = self.stats.connection_refused();
                if let Some(suppressed) = self.at_cap.due(Instant::now()) {
                    tracing::warn!(
                        %peer,
                        limit = self.max_connections,
                        refused,
                        suppressed,
                        "refusing connections: the server is at its connection cap (ServerBuilder::max_connections)"
                    );
                }
                continue;
            }
            return Ok((stream, peer));
        }
    }

    /// Out of descriptors: close the waiting connection with the reserve
    /// one, then pause (the connections open keep being served).
    async fn out_of_files(&mut self, err: &io::Error) {
        let count = self.stats.accept_error();
        if let Some(suppressed) = self.failing.due(Instant::now()) {
            tracing::warn!(
                %err,
                count,
                suppressed,
                open = self.stats.connections_open(),
                "accept failed: the process is out of file descriptors; refusing new connections \
                 (raise `ulimit -n`, or lower ServerBuilder::max_connections)"
            );
        }
        if self.reserve.take().is_some() {
            // The reserve is closed now, so this accept gets a descriptor.
            if let Ok((stream, _)) = self.listener.accept().await {
                drop(stream);
                self.stats.connection_refused();
            }
            self.reserve = reserve_descriptor();
        }
        tokio::time::sleep(BACKOFF).await;
    }
}

fn reserve_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_stays_under_the_open_file_limit() {
        let cap = default_max_connections();
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        assert!((1..=DEFAULT_MAX_CONNECTIONS).contains(&cap), "{cap}");
        if let Some(files) = files {
            assert!((cap as u64) < files, "{cap} connections must leave descriptors spare of {files}");
        }
    }

    #[test]
    fn repeated_warnings_are_throttled_and_counted() {
        let t0 = Instant::now();
        let mut throttled = Throttled::default();
        assert_eq!(throttled.due(t0), Some(0));
        assert_eq!(throttled.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(throttled.due(t0 + Duration::from_secs(2)), None);
        assert_eq!(throttled.due(t0 + LOG_EVERY), Some(2));
    }

    #[test]
    fn descriptor_exhaustion_is_told_apart_from_a_broken_listener() {
        assert!(matches!(classify(&io::Error::from_raw_os_error(24)), AcceptError::OutOfFiles));
        assert!(matches!(classify(&io::Error::from_raw_os_error(105)), AcceptError::OutOfMemory));
        assert!(matches!(classify(&io::ErrorKind::ConnectionAborted.into()), AcceptError::PeerGone));
        assert!(matches!(classify(&io::Error::from_raw_os_error(22)), AcceptError::Fatal));
    }
}
