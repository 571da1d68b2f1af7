//! Write coalescing: many producers, one buffer, one writer task.
//!
//! Producers (call tasks, the reader answering pings) encode frames directly
//! into a shared `BytesMut` under a short lock. The writer task swaps that
//! buffer for an empty one and writes it with as few syscalls as the socket
//! allows, so a burst of frames costs one write instead of one each.
//!
//! Memory stays bounded by a high-water mark: call tasks wait in
//! [`WriteQueue::push`] while the peer is not reading, and connection
//! readers wait in [`WriteQueue::wait_for_space`] before reading more, so a
//! peer that sends pings or bad requests but never reads the answers stops
//! being read instead of growing our buffer.

use std::io;
use std::sync::Mutex;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// A buffer whose capacity grew past this is dropped after writing rather
/// than kept for reuse, so one large frame does not pin memory forever.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The queue was closed: the connection is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Debug)]
struct State {
    buf: BytesMut,
    /// No more frames are accepted; the writer flushes what is queued and
    /// shuts the write side down.
    closing: bool,
    /// The writer stopped (error or finished); producers fail at once.
    stopped: bool,
    /// Bytes ever queued and ever written: a frame queued at position `p`
    /// has left the queue once `written >= p`.
    queued: u64,
    written: u64,
    /// When the socket last accepted bytes.
    last_progress: Instant,
}

/// How far the writer has got, for keepalive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    /// Bytes written to the socket so far.
    pub(crate) written: u64,
    /// When the socket last accepted bytes.
    pub(crate) last_progress: Instant,
}

impl State {
    fn append<R>(&mut self, encode: impl FnOnce(&mut BytesMut) -> R) -> R {
        let before = self.buf.len();
        let out = encode(&mut self.buf);
        // An encoder may also remove what it wrote (an abandoned frame).
        self.queued += self.buf.len().saturating_sub(before) as u64;
        out
    }
}

#[derive(Debug)]
pub(crate) struct WriteQueue {
    state: Mutex<State>,
    wake_writer: Notify,
    space: Notify,
    high_water: usize,
}

impl WriteQueue {
    /// A queue that makes producers wait once `high_water` bytes are queued.
    pub(crate) fn new(high_water: usize) -> WriteQueue {
        WriteQueue {
            state: Mutex::new(State {
                buf: BytesMut::new(),
                closing: false,
                stopped: false,
                queued: 0,
                written: 0,
                last_progress: Instant::now(),
            }),
            wake_writer: Notify::new(),
            space: Notify::new(),
            high_water,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock can only come from an encoder bug;
        // the buffer is still structurally valid, so keep going.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Append a frame now, ignoring the high-water mark. For small control
    /// frames (pong, cancel, goaway) that must not wait behind data.
    pub(crate) fn push_now<R>(&self, encode: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        let mut state = self.lock();
        if state.closing || state.stopped {
            return Err(Closed);
        }
        let out = state.append(encode);
        drop(state);
        self.wake_writer.notify_one();
        Ok(out)
    }

    /// Append a frame without waking anyone: for the task that flushes the
    /// queue itself (see [`Flusher`]) and will flush before it next waits.
    pub(crate) fn append_local<R>(&self, encode: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        let mut state = self.lock();
        if state.closing || state.stopped {
            return Err(Closed);
        }
        Ok(state.append(encode))
    }

    /// Whether the queue is at or above its high-water mark.
    pub(crate) fn is_full(&self) -> bool {
        self.lock().buf.len() >= self.high_water
    }

    /// Append a control frame now and return the queue position just past
    /// it: the frame has been written once [`Progress::written`] reaches it.
    pub(crate) fn push_now_tracked(&self, encode: impl FnOnce(&mut BytesMut)) -> Result<u64, Closed> {
        let mut state = self.lock();
        if state.closing || state.stopped {
            return Err(Closed);
        }
        state.append(encode);
        let position = state.queued;
        drop(state);
        self.wake_writer.notify_one();
        Ok(position)
    }

    /// Append a frame, first waiting while the queue is above its high-water
    /// mark. Cancel-safe: nothing is appended unless the future completes.
    pub(crate) async fn push<R>(&self, encode: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        let out = self.push_quiet(encode).await?;
        self.wake_writer.notify_one();
        Ok(out)
    }

    /// Like [`WriteQueue::push`], but without waking the flushing task: for
    /// a producer that will flush itself, or call [`WriteQueue::wake`].
    pub(crate) async fn push_quiet<R>(&self, encode: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            {
                let mut state = self.lock();
                if state.closing || state.stopped {
                    return Err(Closed);
                }
                if state.buf.len() < self.high_water {
                    return Ok(state.append(encode));
                }
                // Register before unlocking so a flush in between is not missed.
                space.as_mut().enable();
            }
            space.await;
        }
    }

    /// Wake the task that flushes the queue.
    pub(crate) fn wake(&self) {
        self.wake_writer.notify_one();
    }

    /// Wait until a producer queues something (for a connection task that
    /// flushes the queue itself, see [`Flusher`]). Cancel-safe.
    pub(crate) async fn queued(&self) {
        self.wake_writer.notified().await;
    }

    fn record_written(&self, bytes: usize) {
        let mut state = self.lock();
        state.written += bytes as u64;
        state.last_progress = Instant::now();
    }

    /// How far the writer has got.
    pub(crate) fn progress(&self) -> Progress {
        let state = self.lock();
        Progress { written: state.written, last_progress: state.last_progress }
    }

    /// Stop accepting frames; the writer flushes what is queued, then shuts
    /// down the write side of the socket.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    /// The connection is finished: fail producers at once and free the
    /// buffer.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        // Nothing will write these bytes now; free them.
        state.buf = BytesMut::new();
        drop(state);
        self.space.notify_waiters();
    }
}

/// Send FIN now. The usual `AsyncWriteExt::shutdown` needs the write half
/// by `&mut`; a half shared with callers (see the client connection) only
/// offers `&`, and the socket call itself needs no more.
pub(crate) fn shutdown_write(io: &OwnedWriteHalf) -> io::Result<()> {
    match socket2::SockRef::from(io.as_ref()).shutdown(std::net::Shutdown::Write) {
        // Already closed by the peer: nothing left to announce.
        Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// Flushes a [`WriteQueue`] from the connection's own task, with
/// non-blocking writes, instead of a separate writer task.
///
/// Why: a writer task is woken for every queued frame, and on a
/// multi-threaded runtime that wake-up often means a thread switch; a
/// connection task that reads a burst of requests, answers them and then
/// flushes once makes one read and one write per burst. Bytes taken from
/// the queue but not yet accepted by the socket stay here, in order.
#[derive(Debug, Default)]
pub(crate) struct Flusher {
    writing: BytesMut,
}

impl Flusher {
    /// Write as much as the socket takes now. `Ok(true)` once everything
    /// queued has been written; `Ok(false)` if the socket is full (wait for
    /// it to become writable and call again).
    pub(crate) fn flush(&mut self, queue: &WriteQueue, io: &OwnedWriteHalf) -> io::Result<bool> {
        loop {
            if self.writing.is_empty() {
                let mut state = queue.lock();
                if state.buf.is_empty() {
                    return Ok(true);
                }
                // Trade our emptied buffer (capacity kept) for the queued bytes.
                self.writing.clear();
                if self.writing.capacity() > KEEP_CAPACITY {
                    self.writing = BytesMut::new();
                }
                std::mem::swap(&mut state.buf, &mut self.writing);
            }
            match io.try_write(&self.writing) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.writing.advance(n);
                    queue.record_written(n);
                    queue.space.notify_waiters();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
    }

    /// Close the queue and write everything left, waiting for the socket
    /// as needed; then shut down the write side.
    pub(crate) async fn finish(&mut self, queue: &WriteQueue, io: &OwnedWriteHalf) -> io::Result<()> {
        queue.close();
        while !self.flush(queue, io)? {
            io.writable().await?;
        }
        queue.stop();
        shutdown_write(io)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn pair() -> (OwnedWriteHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (_read, write) = client.into_split();
        (write, server)
    }

    #[tokio::test]
    async fn frames_queued_together_are_written_in_order_and_flushed_on_finish() {
        let (write, mut peer) = pair().await;
        let queue = WriteQueue::new(1 << 20);
        for i in 0..100u8 {
            queue.push(|buf| buf.extend_from_slice(&[i])).await.expect("open");
        }
        let mut flusher = Flusher::default();
        flusher.finish(&queue, &write).await.expect("flushed");
        assert_eq!(queue.push_now(|_| ()), Err(Closed));
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.expect("read");
        assert_eq!(received, (0..100u8).collect::<Vec<_>>());
        assert_eq!(queue.progress().written, 100);
    }

    #[tokio::test]
    async fn producers_wait_above_high_water_until_a_flush_makes_room() {
        let (write, mut peer) = pair().await;
        let queue = Arc::new(WriteQueue::new(128));
        queue.push(|buf| buf.extend_from_slice(&[7; 200])).await.expect("below the mark");
        assert!(queue.is_full());
        let producer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(|buf| buf.extend_from_slice(&[8; 10])).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!producer.is_finished(), "held back above the high-water mark");
        assert!(Flusher::default().flush(&queue, &write).expect("flush"));
        producer.await.expect("join").expect("admitted once flushed");
        let mut received = vec![0; 200];
        peer.read_exact(&mut received).await.expect("read");
        assert!(received.iter().all(|&b| b == 7));
    }
}
