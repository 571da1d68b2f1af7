//! Reading frames: a buffer, a decoder and the time of the last read.

use std::io;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::native::{Frame, FrameDecoder, FrameError, PREFACE, check_preface};

/// The read buffer starts this small so idle connections stay cheap, and
/// grows (up to the frame limit) only when frames need it.
const INITIAL_CAPACITY: usize = 4 * 1024;
/// Free space to ask for before each read, so a burst of small frames is
/// taken in one syscall.
const READ_CHUNK: usize = 16 * 1024;
/// A buffer whose capacity grew past this is replaced once it is empty.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a frame")]
    TruncatedFrame,
}

pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    decoder: FrameDecoder,
    last_read: Instant,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader; `buf` may already hold bytes read while sniffing.
    pub(crate) fn new(io: R, buf: BytesMut, max_frame_size: usize) -> FrameReader<R> {
        FrameReader { io, buf, decoder: FrameDecoder::new(max_frame_size), last_read: Instant::now() }
    }

    /// When bytes last arrived (for keepalive).
    pub(crate) fn last_read(&self) -> Instant {
        self.last_read
    }

    /// Read and check the peer's preface.
    pub(crate) async fn read_preface(&mut self) -> Result<(), ReadError> {
        loop {
            if check_preface(&self.buf)?.is_some() {
                let _ = self.buf.split_to(PREFACE.len());
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(ReadError::TruncatedFrame);
            }
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    /// Cancel-safe: bytes read are kept in the buffer.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(ReadError::TruncatedFrame) };
            }
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::with_capacity(INITIAL_CAPACITY);
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        } else if self.buf.capacity() == 0 {
            self.buf.reserve(INITIAL_CAPACITY);
        }
        let n = self.io.read_buf(&mut self.buf).await?;
        if n > 0 {
            self.last_read = Instant::now();
        }
        Ok(n)
    }

    /// Give back the read half (for lingering close).
    pub(crate) fn into_inner(self) -> R {
        self.io
    }
}
