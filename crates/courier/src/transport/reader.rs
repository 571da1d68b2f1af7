//! Reading frames: a buffer, a decoder and the time of the last read.

use std::io;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedReadHalf;

use crate::protocol::native::{
    Frame, FrameDecoder, FrameError, FrameHeader, HEADER_LEN, PREFACE, check_preface,
};

/// The read buffer starts this small so idle connections stay cheap, and
/// grows (up to the frame limit) only when frames need it.
const INITIAL_CAPACITY: usize = 4 * 1024;
/// The most a busy connection reads at once: reads that fill the space
/// they were given double the next read's space up to this, so a burst of
/// 64 requests of 4 KiB is taken in a syscall or two, not sixteen.
const MAX_READ_CHUNK: usize = 256 * 1024;
/// Below this much free space, the buffer grows before reading.
const MIN_SPARE: usize = 1024;

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

/// What the buffer holds beyond the complete frames taken from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Partial {
    /// Nothing: the peer is between frames.
    Nothing,
    /// Part of a frame header.
    Header,
    /// A frame whose header has arrived and whose payload has not (all).
    Frame(FrameHeader),
    /// The rest of a refused frame, being read and thrown away.
    Discarding,
}

pub(crate) struct FrameReader {
    io: OwnedReadHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
    last_read: Instant,
    /// How much space the next read gets: grows while reads fill it (a busy
    /// connection), shrinks while they do not (so idle ones stay small).
    read_chunk: usize,
    /// Bytes still to throw away (a frame we refused but can step over).
    discard: u64,
    /// Bytes read in all (for request progress).
    received: u64,
}

impl FrameReader {
    /// A reader; `buf` may already hold bytes read while sniffing.
    pub(crate) fn new(io: OwnedReadHalf, buf: BytesMut, max_frame_size: usize) -> FrameReader {
        FrameReader {
            io,
            buf,
            decoder: FrameDecoder::new(max_frame_size),
            last_read: Instant::now(),
            read_chunk: INITIAL_CAPACITY,
            discard: 0,
            received: 0,
        }
    }

    /// When bytes last arrived (for keepalive).
    pub(crate) fn last_read(&self) -> Instant {
        self.last_read
    }

    /// Bytes read since the connection started.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// What is buffered beyond the frames taken so far; call it after
    /// [`FrameReader::decode_buffered`] said `None`.
    pub(crate) fn partial(&self) -> Partial {
        if self.discard > 0 {
            return Partial::Discarding;
        }
        match self.buf.first_chunk::<HEADER_LEN>() {
            None if self.buf.is_empty() => Partial::Nothing,
            None => Partial::Header,
            // A header that does not parse is an error the next decode
            // reports; until then it is only part of a frame.
            Some(bytes) => FrameHeader::parse(bytes, self.decoder.max_frame_size())
                .map_or(Partial::Header, Partial::Frame),
        }
    }

    /// Throw away the partly received frame at the front of the buffer
    /// (whose header is `header`): what has arrived now, and the rest as it
    /// arrives. The connection goes on with the frame after it.
    pub(crate) fn skip_partial(&mut self, header: &FrameHeader) {
        let whole = HEADER_LEN as u64 + u64::from(header.payload_len);
        let have = self.buf.len().min(usize::try_from(whole).unwrap_or(usize::MAX));
        self.buf.advance(have);
        self.discard = self.discard.saturating_add(whole - have as u64);
        if self.buf.is_empty() {
            // What was reserved for the frame is not needed any more.
            self.buf = BytesMut::new();
        }
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

    /// The next frame among the bytes already read, without reading more.
    pub(crate) fn decode_buffered(&mut self) -> Result<Option<Frame>, ReadError> {
        if self.discard > 0 {
            let n = self.buf.len().min(usize::try_from(self.discard).unwrap_or(usize::MAX));
            self.buf.advance(n);
            self.discard -= n as u64;
            if self.discard > 0 {
                return Ok(None);
            }
        }
        Ok(self.decoder.decode(&mut self.buf)?)
    }

    /// Read more bytes. `Ok(false)` on a clean end of stream between frames.
    /// Cancel-safe.
    pub(crate) async fn read_more(&mut self) -> Result<bool, ReadError> {
        if self.fill().await? > 0 {
            return Ok(true);
        }
        if self.buf.is_empty() && self.discard == 0 { Ok(false) } else { Err(ReadError::TruncatedFrame) }
    }

    /// Read what the socket has, waiting if it has nothing.
    async fn fill(&mut self) -> io::Result<usize> {
        loop {
            let spare = self.buf.capacity() - self.buf.len();
            if spare < MIN_SPARE || spare < self.read_chunk / 2 {
                self.buf.reserve(self.read_chunk);
            }
            let space = self.buf.capacity() - self.buf.len();
            match self.io.try_read_buf(&mut self.buf) {
                Ok(n) => {
                    if n > 0 {
                        self.last_read = Instant::now();
                        self.received += n as u64;
                    }
                    self.read_chunk = if n == space {
                        (self.read_chunk * 2).min(MAX_READ_CHUNK)
                    } else {
                        (self.read_chunk / 2).max(INITIAL_CAPACITY)
                    };
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
            // Nothing to read: the connection is going idle. Do not keep a
            // burst-sized empty buffer through the wait (an idle connection
            // should cost a few KiB, not 256), but remember the size: a busy
            // connection between two bursts gets it back in one allocation.
            if self.buf.is_empty() && self.buf.capacity() > INITIAL_CAPACITY {
                self.buf = BytesMut::new();
            }
            self.io.readable().await?;
        }
    }

    /// Throw away the next `bytes` bytes (a whole frame, header included,
    /// that was refused for its size), reading them as they arrive.
    pub(crate) fn skip(&mut self, bytes: u64) {
        self.discard = self.discard.saturating_add(bytes);
    }

    /// Give back the read half (for lingering close).
    pub(crate) fn into_inner(self) -> OwnedReadHalf {
        self.io
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::protocol::native::{FrameKind, encode_ping};

    #[tokio::test]
    async fn a_busy_connection_reads_big_and_an_idle_one_lets_go_of_its_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (read, _write) = server.into_split();
        let mut reader = FrameReader::new(read, BytesMut::new(), 1 << 20);

        let mut burst = BytesMut::new();
        for _ in 0..40_000 {
            encode_ping(&mut burst, FrameKind::Ping, *b"12345678");
        }
        client.write_all(&burst).await.expect("write");
        let mut frames = 0;
        while frames < 40_000 {
            match reader.decode_buffered().expect("valid") {
                Some(_) => frames += 1,
                None => assert!(reader.read_more().await.expect("read")),
            }
        }
        assert!(reader.read_chunk > INITIAL_CAPACITY, "a burst grows the read size");

        // Idle now: the next read waits, and must not hold the big buffer.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), reader.read_more()).await;
        assert!(pending.is_err(), "nothing to read");
        assert_eq!(reader.buf.capacity(), 0, "an idle connection holds no read buffer");
    }
}
