//! [`Watched`]: a stream that reports the bytes read from it to a shared
//! [`Progress`], for protocols whose parser we do not own (hyper's HTTP/1).
//!
//! Bytes that arrive while no request is being handled are the start (or
//! more) of the next request's head; the request handler marks when a head
//! is complete. [`HeadWatch::overdue`] then resolves when a head that has
//! started stops arriving, or trickles, so the connection can be closed.
//!
//! Writes are watched too: with a stall limit set, a write that makes no
//! progress for that long fails (`TimedOut`), so hyper ends a connection
//! whose peer stopped reading its replies instead of holding it forever.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::progress::{Overdue, Progress, RequestTimeouts};

#[derive(Debug, Default)]
struct State {
    progress: Progress,
    /// A request is being handled: bytes read now are its body, which the
    /// handler watches itself.
    handling: usize,
}

/// The shared view of one connection's request heads.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadWatch(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Woken when a head starts, so an idle connection needs no timer.
    started: Notify,
}

impl HeadWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self, bytes: usize) {
        let mut state = self.state();
        if state.handling == 0 && bytes > 0 {
            let now = Instant::now();
            let was_started = state.progress.in_progress();
            state.progress.start(now);
            state.progress.received(bytes, now);
            if !was_started {
                self.0.started.notify_one();
            }
        }
    }

    /// A request's head is complete and its handler runs until the guard
    /// drops.
    pub(crate) fn handling(&self) -> Handling {
        let mut state = self.state();
        state.progress.complete();
        state.handling += 1;
        Handling(self.clone())
    }

    /// Resolves when a request head that has started is overdue.
    pub(crate) async fn overdue(&self, timeouts: RequestTimeouts) -> Overdue {
        loop {
            let deadline = self.state().progress.deadline(&timeouts);
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                // Nothing started: wait until something does (a start
                // before this wait left a permit, so none is missed).
                None => {
                    self.0.started.notified().await;
                    continue;
                }
            }
            if let Err(overdue) = self.state().progress.check(Instant::now(), &timeouts) {
                return overdue;
            }
        }
    }
}

/// Marks a request as being handled; see [`HeadWatch::handling`].
#[derive(Debug)]
pub(crate) struct Handling(HeadWatch);

impl Drop for Handling {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.handling = state.handling.saturating_sub(1);
    }
}

/// `inner`, reporting what is read to a [`HeadWatch`].
#[derive(Debug)]
pub(crate) struct Watched<T> {
    inner: T,
    watch: HeadWatch,
    /// How long a write may make no progress; `None`: forever.
    write_stall: Option<Duration>,
    /// Running while a write is pending, from when it first was.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, watch: HeadWatch) -> Watched<T> {
        Watched { inner, watch, write_stall: None, stalled: None }
    }

    /// Fail a write that makes no progress for `stall`.
    pub(crate) fn with_write_stall(mut self, stall: Option<Duration>) -> Watched<T> {
        self.write_stall = stall;
        self
    }

    /// A write's outcome, failed if it has been pending for too long.
    fn watch_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Pending => {
                if let Some(stall) = self.write_stall {
                    let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                    if timer.as_mut().poll(cx).is_ready() {
                        self.stalled = None;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the peer stopped reading replies",
                        )));
                    }
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.watch.read(buf.filled().len() - before);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const T: RequestTimeouts =
        RequestTimeouts { stall: Duration::from_millis(100), timeout: Duration::from_secs(60), min_rate: 1 };

    #[tokio::test]
    async fn a_head_that_stops_arriving_is_overdue_and_a_handled_request_is_not() {
        let (client, server) = tokio::io::duplex(1024);
        let watch = HeadWatch::default();
        let mut server = Watched::new(server, watch.clone());
        let (_client_read, mut client) = tokio::io::split(client);

        // Idle: nothing is overdue, however long.
        let idle = tokio::time::timeout(Duration::from_millis(300), watch.overdue(T)).await;
        assert!(idle.is_err(), "an idle connection is never overdue");

        // Half a head, then nothing.
        client.write_all(b"POST /a/b HTTP/1.1\r\n").await.expect("write");
        let mut buf = [0; 64];
        let n = server.read(&mut buf).await.expect("read");
        assert!(n > 0);
        let overdue = tokio::time::timeout(Duration::from_secs(5), watch.overdue(T)).await.expect("overdue");
        assert!(matches!(overdue, Overdue::Stalled { .. }), "{overdue}");

        // Once handled, the body's bytes are not the head's.
        let handling = watch.handling();
        client.write_all(b"x").await.expect("write");
        let _ = server.read(&mut buf).await.expect("read");
        let quiet = tokio::time::timeout(Duration::from_millis(300), watch.overdue(T)).await;
        assert!(quiet.is_err(), "a request being handled watches its own body");
        drop(handling);
    }
}
