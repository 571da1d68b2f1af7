//! courier's native protocol: versioned, length-prefixed, multiplexed frames.
//!
//! ## Wire format (version 1)
//!
//! A connection opens with the client's 8-byte [`PREFACE`]:
//! `C7 'C' 'R' 'P' 'C' <version> 00 00`. The first byte is not ASCII, so a
//! listener can tell courier from HTTP/1, HTTP/2 and JSON-RPC by one byte.
//! The server answers with the same preface, then both sides exchange frames.
//!
//! Every frame is a fixed 16-byte header, then `meta_len` bytes of metadata,
//! then the body (`payload_len - meta_len` bytes). Integers are big-endian.
//!
//! ```text
//!  0       4    5     6     7     8        12       16
//!  +-------+----+-----+-----+-----+--------+--------+---------------+------+
//!  |payload|kind|flags|codec| rsv |call id |meta len| metadata ...  | body |
//!  |  len  | u8 | u8  | u8  | u8  |  u32   |  u32   |               |      |
//!  +-------+----+-----+-----+-----+--------+--------+---------------+------+
//! ```
//!
//! Frame kinds: request, response, one-way (a request that wants no reply),
//! ping, pong, cancel (the caller gave up on a call id) and goaway (the sender
//! is shutting down or closing the connection for an error). Calls are
//! matched by call id; responses may arrive in any order. The metadata of each
//! kind is described in `meta`.
//!
//! ## Streams
//!
//! A streaming call shares the connection and the call ids with unary
//! ones. The client opens it with a stream-open frame (a request's
//! metadata, no body); then each side sends message frames (one message
//! each; the client's last may carry the end-stream flag, or a half-close
//! frame follows it), and the server ends the stream with an ordinary
//! response frame: its status and trailers, no body. Either side grants
//! the other credit with window-update frames (a `u32` increment in the
//! body; see `stream::credit`: each side starts with
//! [`DEFAULT_STREAM_WINDOW`](crate::stream::credit::DEFAULT_STREAM_WINDOW)),
//! and a cancel frame from the client ends the stream at once.
//!
//! The payload length is checked against the receiver's limit *before* any
//! buffer grows for it, so a peer cannot make us allocate more than
//! `max_frame_size` by lying in a header.

mod meta;
mod response;
pub(crate) mod varint;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use meta::{GoAway, HeaderIter, RequestHead, ResponseHead};
pub use response::encode_response;

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;

/// The connection preface each side sends first.
pub const PREFACE: [u8; 8] = [0xC7, b'C', b'R', b'P', b'C', VERSION, 0, 0];

/// The first byte of [`PREFACE`]; protocol sniffing keys on it.
pub const MAGIC_BYTE: u8 = PREFACE[0];

/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 16;

/// The default limit on a frame's payload (metadata plus body): 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// The most a decoder reserves ahead of the bytes it has seen.
const GROW_STEP: usize = 64 * 1024;

/// Length of a ping or pong body.
pub const PING_LEN: usize = 8;

/// Length of a window update's body.
pub const WINDOW_UPDATE_LEN: usize = 4;

/// The flag of a message frame after which its sender sends no more (a
/// half-close in the same frame). The only flag this version defines, and
/// only on message frames.
pub const FLAG_END_STREAM: u8 = 0x01;

/// What a frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A call that expects a response with the same call id.
    Request = 1,
    /// The answer to a request.
    Response = 2,
    /// A call that expects no response.
    OneWay = 3,
    /// A liveness probe; the peer answers with a pong carrying the same body.
    Ping = 4,
    /// The answer to a ping.
    Pong = 5,
    /// The caller abandoned the call with this id; the server should stop it.
    Cancel = 6,
    /// The sender will close the connection: no new calls should be sent.
    GoAway = 7,
    /// The client opens a stream (request metadata, no body).
    StreamOpen = 8,
    /// One message of a stream, either way.
    Message = 9,
    /// The client sends no more messages on this stream.
    HalfClose = 10,
    /// The sender grants its peer more credit on a stream.
    WindowUpdate = 11,
}

impl FrameKind {
    /// The kind for a header byte.
    pub fn from_u8(value: u8) -> Option<FrameKind> {
        Some(match value {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::OneWay,
            4 => FrameKind::Ping,
            5 => FrameKind::Pong,
            6 => FrameKind::Cancel,
            7 => FrameKind::GoAway,
            8 => FrameKind::StreamOpen,
            9 => FrameKind::Message,
            10 => FrameKind::HalfClose,
            11 => FrameKind::WindowUpdate,
            _ => return None,
        })
    }
}

/// Errors from decoding (or refusing to encode) native protocol bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The connection did not start with courier's preface.
    #[error("not a courier connection: expected the courier preface, got {0:02x?}")]
    BadPreface(Vec<u8>),
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported courier protocol version {0} (this build speaks version {VERSION})")]
    UnsupportedVersion(u8),
    /// A frame's payload exceeds the receiver's (or sender's) limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The call id from the offending header.
        call_id: u32,
        /// The kind byte from the offending header.
        kind: u8,
        /// The payload size the header claims.
        size: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A header named a frame kind this version does not define.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A header set flag bits this version does not define.
    #[error("unsupported frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// Some part of a frame is inconsistent or truncated.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// Which part of the frame.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl FrameError {
    pub(crate) fn malformed(what: &'static str, why: &'static str) -> FrameError {
        FrameError::Malformed { what, why }
    }
}

/// Check a connection preface. `Ok(None)` means more bytes are needed.
pub fn check_preface(bytes: &[u8]) -> Result<Option<()>, FrameError> {
    let seen = &bytes[..bytes.len().min(PREFACE.len())];
    // The magic is the first five bytes; reject as soon as they disagree.
    let magic = &PREFACE[..5];
    let magic_seen = &seen[..seen.len().min(magic.len())];
    if magic_seen != &magic[..magic_seen.len()] {
        return Err(FrameError::BadPreface(seen.to_vec()));
    }
    if seen.len() < PREFACE.len() {
        return Ok(None);
    }
    if seen[5] != VERSION {
        return Err(FrameError::UnsupportedVersion(seen[5]));
    }
    if seen[6..] != [0, 0] {
        return Err(FrameError::BadPreface(seen.to_vec()));
    }
    Ok(Some(()))
}

/// A decoded fixed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame is for.
    pub kind: FrameKind,
    /// The codec id of the body (see `courier::codec::Codec`).
    pub codec: u8,
    /// The call this frame belongs to (0 for connection-level frames).
    pub call_id: u32,
    /// [`FLAG_END_STREAM`] on a message frame; 0 on every other.
    pub flags: u8,
    /// Length of the metadata section.
    pub meta_len: u32,
    /// Length of metadata plus body.
    pub payload_len: u32,
}

impl FrameHeader {
    /// Parse and validate a header from its 16 bytes. The payload length is
    /// checked against `max_frame_size` here, before anything is allocated.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_frame_size: usize) -> Result<FrameHeader, FrameError> {
        let mut b = &bytes[..];
        let payload_len = b.get_u32();
        let kind_byte = b.get_u8();
        let flags = b.get_u8();
        let codec = b.get_u8();
        let reserved = b.get_u8();
        let call_id = b.get_u32();
        let meta_len = b.get_u32();
        if u64::from(payload_len) > max_frame_size as u64 {
            return Err(FrameError::TooLarge {
                call_id,
                kind: kind_byte,
                size: u64::from(payload_len),
                limit: max_frame_size,
            });
        }
        let kind = FrameKind::from_u8(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
        let allowed = if kind == FrameKind::Message { FLAG_END_STREAM } else { 0 };
        if flags & !allowed != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        if reserved != 0 {
            return Err(FrameError::malformed("frame header", "reserved byte is not zero"));
        }
        if meta_len > payload_len {
            return Err(FrameError::malformed("frame header", "metadata length exceeds payload length"));
        }
        Ok(FrameHeader { kind, codec, call_id, flags, meta_len, payload_len })
    }
}

/// One decoded frame. `meta` and `body` share the read buffer's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The fixed header.
    pub header: FrameHeader,
    /// The metadata section; decode it with the head type for the frame kind.
    pub meta: Bytes,
    /// The body (the codec-encoded message, or a ping's 8 bytes).
    pub body: Bytes,
}

/// Splits complete frames off the front of a read buffer.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame_size: usize,
}

impl FrameDecoder {
    /// A decoder that refuses payloads larger than `max_frame_size`.
    pub fn new(max_frame_size: usize) -> FrameDecoder {
        FrameDecoder { max_frame_size }
    }

    /// The payload limit.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Take one complete frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame; in that case
    /// it reserves room for the rest (bounded by the limit) so the next read
    /// can complete it.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header_bytes) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = FrameHeader::parse(header_bytes, self.max_frame_size)?;
        let payload_len = header.payload_len as usize;
        let frame_len = HEADER_LEN + payload_len;
        if buf.len() < frame_len {
            // Grow towards the frame as its bytes arrive rather than all at
            // once: 16 bytes claiming 16 MiB should not reserve 16 MiB.
            buf.reserve((frame_len - buf.len()).min(GROW_STEP));
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut payload = buf.split_to(payload_len).freeze();
        let meta = payload.split_to(header.meta_len as usize);
        Ok(Some(Frame { header, meta, body: payload }))
    }
}

/// Writes one frame into a buffer in three steps: [`FrameEncoder::begin`]
/// reserves the header, the caller appends metadata, calls
/// [`FrameEncoder::end_meta`], appends the body (often straight from a codec),
/// then [`FrameEncoder::finish`] fills in the lengths and enforces the limit.
#[derive(Debug)]
#[must_use = "a frame must be finished or its header stays zeroed"]
pub struct FrameEncoder {
    start: usize,
    meta_end: Option<usize>,
}

impl FrameEncoder {
    /// Start a frame at the end of `buf`.
    pub fn begin(buf: &mut BytesMut, kind: FrameKind, codec: u8, call_id: u32) -> FrameEncoder {
        let start = buf.len();
        buf.reserve(HEADER_LEN);
        buf.put_u32(0); // payload length, patched by `finish`
        buf.put_u8(kind as u8);
        buf.put_u8(0); // flags
        buf.put_u8(codec);
        buf.put_u8(0); // reserved
        buf.put_u32(call_id);
        buf.put_u32(0); // metadata length, patched by `finish`
        FrameEncoder { start, meta_end: None }
    }

    /// Mark the end of the metadata section.
    pub fn end_meta(&mut self, buf: &BytesMut) {
        self.meta_end = Some(buf.len());
    }

    /// Patch the header. If the payload exceeds `max_frame_size` the partial
    /// frame is removed from `buf` and an error is returned, so nothing
    /// oversized is ever sent.
    pub fn finish(self, buf: &mut BytesMut, max_frame_size: usize) -> Result<(), FrameError> {
        let payload_start = self.start + HEADER_LEN;
        let meta_end = self.meta_end.unwrap_or(buf.len());
        let payload_len = buf.len() - payload_start;
        let meta_len = meta_end - payload_start;
        let call_id_and_kind = &buf[self.start + 4..self.start + 12];
        let kind = call_id_and_kind[0];
        let call_id = u32::from_be_bytes([
            call_id_and_kind[4],
            call_id_and_kind[5],
            call_id_and_kind[6],
            call_id_and_kind[7],
        ]);
        if payload_len > max_frame_size || u32::try_from(payload_len).is_err() {
            buf.truncate(self.start);
            return Err(FrameError::TooLarge {
                call_id,
                kind,
                size: payload_len as u64,
                limit: max_frame_size,
            });
        }
        // Both lengths fit in u32: meta_len <= payload_len, checked above.
        buf[self.start..self.start + 4].copy_from_slice(&(payload_len as u32).to_be_bytes());
        buf[self.start + 12..self.start + 16].copy_from_slice(&(meta_len as u32).to_be_bytes());
        Ok(())
    }

    /// Abandon the frame, removing whatever was written for it.
    pub fn abandon(self, buf: &mut BytesMut) {
        buf.truncate(self.start);
    }
}

/// Encode a ping or pong frame carrying `payload`.
pub fn encode_ping(buf: &mut BytesMut, kind: FrameKind, payload: [u8; PING_LEN]) {
    put_control_header(buf, kind, 0, PING_LEN as u32);
    buf.extend_from_slice(&payload);
}

/// Encode one message of stream `call_id`, with [`FLAG_END_STREAM`] if
/// `end`. Refused (nothing written) past `max_frame_size`.
pub fn encode_message(
    buf: &mut BytesMut,
    call_id: u32,
    codec: u8,
    message: &[u8],
    end: bool,
    max_frame_size: usize,
) -> Result<(), FrameError> {
    if message.len() > max_frame_size || u32::try_from(message.len()).is_err() {
        return Err(FrameError::TooLarge {
            call_id,
            kind: FrameKind::Message as u8,
            size: message.len() as u64,
            limit: max_frame_size,
        });
    }
    buf.reserve(HEADER_LEN + message.len());
    buf.put_u32(message.len() as u32);
    buf.put_u8(FrameKind::Message as u8);
    buf.put_u8(if end { FLAG_END_STREAM } else { 0 });
    buf.put_u8(codec);
    buf.put_u8(0); // reserved
    buf.put_u32(call_id);
    buf.put_u32(0); // no metadata
    buf.extend_from_slice(message);
    Ok(())
}

/// Encode a half-close of stream `call_id`.
pub fn encode_half_close(buf: &mut BytesMut, call_id: u32) {
    put_control_header(buf, FrameKind::HalfClose, call_id, 0);
}

/// Encode a grant of `increment` more credit on stream `call_id`.
pub fn encode_window_update(buf: &mut BytesMut, call_id: u32, increment: u32) {
    put_control_header(buf, FrameKind::WindowUpdate, call_id, WINDOW_UPDATE_LEN as u32);
    buf.put_u32(increment);
}

/// The increment a window update's body grants (never zero).
pub fn decode_window_update(body: &[u8]) -> Result<u32, FrameError> {
    let bytes = <[u8; WINDOW_UPDATE_LEN]>::try_from(body)
        .map_err(|_| FrameError::malformed("window update", "body is not 4 bytes"))?;
    match u32::from_be_bytes(bytes) {
        0 => Err(FrameError::malformed("window update", "increment is zero")),
        increment => Ok(increment),
    }
}

/// Encode a cancel frame for `call_id`.
pub fn encode_cancel(buf: &mut BytesMut, call_id: u32) {
    put_control_header(buf, FrameKind::Cancel, call_id, 0);
}

fn put_control_header(buf: &mut BytesMut, kind: FrameKind, call_id: u32, payload_len: u32) {
    buf.reserve(HEADER_LEN + payload_len as usize);
    buf.put_u32(payload_len);
    buf.put_u8(kind as u8);
    buf.put_u8(0); // flags
    buf.put_u8(0); // codec
    buf.put_u8(0); // reserved
    buf.put_u32(call_id);
    buf.put_u32(0); // no metadata
}

#[cfg(test)]
mod tests;
