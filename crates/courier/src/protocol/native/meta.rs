//! The metadata section of each frame kind.
//!
//! All lengths and numbers are LEB128 varints; strings are UTF-8.
//!
//! ```text
//! request / one-way:  method_len method  deadline  header_count {key_len key value_len value}*
//! response:           code  flags  message_len message  details_len details  header_count {..}*
//! goaway:             last_call_id  code  message_len message
//! ```
//!
//! `deadline` is the caller's remaining time in microseconds plus one; zero
//! means "no deadline". Deadlines travel as relative durations so clocks on
//! the two hosts need not agree. In a response, flag bit 0 marks `details` as
//! a service's own error encoded with the call's codec.
//!
//! Decoding borrows from the metadata bytes; nothing is copied until a caller
//! asks for an owned value.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::{FrameError, varint};

/// Response flag: `details` holds an application error.
const RESPONSE_APPLICATION_ERROR: u8 = 0b1;

fn put_str(buf: &mut BytesMut, value: &str) {
    put_bytes(buf, value.as_bytes());
}

fn put_bytes(buf: &mut BytesMut, value: &[u8]) {
    varint::put(buf, value.len() as u64);
    buf.put_slice(value);
}

fn take_bytes<'a>(input: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], FrameError> {
    let len = varint::take_len(input, what)?;
    if len > input.len() {
        return Err(FrameError::malformed(what, "length runs past the end of the metadata"));
    }
    let (value, rest) = input.split_at(len);
    *input = rest;
    Ok(value)
}

fn take_str<'a>(input: &mut &'a [u8], what: &'static str) -> Result<&'a str, FrameError> {
    std::str::from_utf8(take_bytes(input, what)?).map_err(|_| FrameError::malformed(what, "not valid UTF-8"))
}

fn take_u32(input: &mut &[u8], what: &'static str) -> Result<u32, FrameError> {
    u32::try_from(varint::take(input, what)?)
        .map_err(|_| FrameError::malformed(what, "value does not fit in 32 bits"))
}

fn put_headers<'h>(buf: &mut BytesMut, headers: impl ExactSizeIterator<Item = (&'h str, &'h str)>) {
    varint::put(buf, headers.len() as u64);
    for (key, value) in headers {
        put_str(buf, key);
        put_str(buf, value);
    }
}

/// Validate a header block and return it for lazy iteration.
fn take_headers<'a>(input: &mut &'a [u8]) -> Result<HeaderIter<'a>, FrameError> {
    let count = varint::take_len(input, "header count")?;
    // Each header needs at least two bytes, so a count larger than half the
    // remaining bytes is a lie; reject it before looping.
    if count > input.len() / 2 {
        return Err(FrameError::malformed("header count", "more headers than bytes"));
    }
    let start = *input;
    for _ in 0..count {
        take_str(input, "header name")?;
        take_str(input, "header value")?;
    }
    let used = start.len() - input.len();
    Ok(HeaderIter { remaining: count, bytes: &start[..used] })
}

/// Iterates the key/value headers of a frame, borrowing from its metadata.
#[derive(Clone, Debug, Default)]
pub struct HeaderIter<'a> {
    remaining: usize,
    bytes: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        if self.remaining == 0 {
            return None;
        }
        // Already validated by `take_headers`, so these cannot fail; stop
        // rather than panic if they somehow do.
        let key = take_str(&mut self.bytes, "header name").ok()?;
        let value = take_str(&mut self.bytes, "header value").ok()?;
        self.remaining -= 1;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}

/// The metadata of a request or one-way frame.
#[derive(Clone, Debug)]
pub struct RequestHead<'a> {
    /// The full method name, `Service.Method`.
    pub method: &'a str,
    /// The caller's remaining time, if it set a deadline.
    pub deadline: Option<Duration>,
    /// Key/value headers.
    pub headers: HeaderIter<'a>,
}

impl<'a> RequestHead<'a> {
    /// Append a request's metadata to `buf`.
    pub fn encode<'h>(
        buf: &mut BytesMut,
        method: &str,
        deadline: Option<Duration>,
        headers: impl ExactSizeIterator<Item = (&'h str, &'h str)>,
    ) {
        put_str(buf, method);
        let deadline = match deadline {
            None => 0,
            Some(remaining) => {
                u64::try_from(remaining.as_micros()).unwrap_or(u64::MAX - 1).min(u64::MAX - 1) + 1
            }
        };
        varint::put(buf, deadline);
        put_headers(buf, headers);
    }

    /// Decode a request's metadata.
    pub fn decode(meta: &'a [u8]) -> Result<RequestHead<'a>, FrameError> {
        let mut input = meta;
        let method = take_str(&mut input, "method name")?;
        let deadline = match varint::take(&mut input, "deadline")? {
            0 => None,
            micros => Some(Duration::from_micros(micros - 1)),
        };
        let headers = take_headers(&mut input)?;
        if !input.is_empty() {
            return Err(FrameError::malformed("request metadata", "trailing bytes"));
        }
        Ok(RequestHead { method, deadline, headers })
    }
}

/// The metadata of a response frame.
#[derive(Clone, Debug)]
pub struct ResponseHead<'a> {
    /// The status code number; 0 means success and the body is the result.
    pub code: u32,
    /// Whether `details` holds a service's own error.
    pub application_error: bool,
    /// The status message (empty on success).
    pub message: &'a str,
    /// The status details (empty on success).
    pub details: &'a [u8],
    /// Key/value headers sent back by the server.
    pub headers: HeaderIter<'a>,
}

impl<'a> ResponseHead<'a> {
    /// Append a successful response's metadata (code 0, no headers).
    pub fn encode_ok(buf: &mut BytesMut) {
        // code 0, flags 0, empty message, empty details, zero headers.
        buf.put_slice(&[0, 0, 0, 0, 0]);
    }

    /// Append a response's metadata.
    pub fn encode<'h>(
        buf: &mut BytesMut,
        code: u32,
        application_error: bool,
        message: &str,
        details: &[u8],
        headers: impl ExactSizeIterator<Item = (&'h str, &'h str)>,
    ) {
        varint::put(buf, u64::from(code));
        buf.put_u8(if application_error { RESPONSE_APPLICATION_ERROR } else { 0 });
        put_str(buf, message);
        put_bytes(buf, details);
        put_headers(buf, headers);
    }

    /// Decode a response's metadata.
    pub fn decode(meta: &'a [u8]) -> Result<ResponseHead<'a>, FrameError> {
        let mut input = meta;
        let code = take_u32(&mut input, "status code")?;
        let Some((&flags, rest)) = input.split_first() else {
            return Err(FrameError::malformed("response metadata", "missing flags"));
        };
        input = rest;
        if flags & !RESPONSE_APPLICATION_ERROR != 0 {
            return Err(FrameError::malformed("response metadata", "unknown flags"));
        }
        let message = take_str(&mut input, "status message")?;
        let details = take_bytes(&mut input, "status details")?;
        let headers = take_headers(&mut input)?;
        if !input.is_empty() {
            return Err(FrameError::malformed("response metadata", "trailing bytes"));
        }
        Ok(ResponseHead {
            code,
            application_error: flags & RESPONSE_APPLICATION_ERROR != 0,
            message,
            details,
            headers,
        })
    }
}

/// The metadata of a goaway frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway<'a> {
    /// The highest call id the sender had received when it sent the goaway.
    /// With a non-zero `code` (closing for an error) no request after it was
    /// or will be processed, so the client may retry those elsewhere. During
    /// a graceful drain (`code` 0) the server still answers requests the
    /// client sent before it saw the goaway (see `server::connection`).
    pub last_call_id: u32,
    /// 0 for a graceful shutdown; otherwise the status code of the error that
    /// made the sender close the connection.
    pub code: u32,
    /// Why the connection is going away.
    pub message: &'a str,
}

impl<'a> GoAway<'a> {
    /// Append a goaway's metadata.
    pub fn encode(&self, buf: &mut BytesMut) {
        varint::put(buf, u64::from(self.last_call_id));
        varint::put(buf, u64::from(self.code));
        put_str(buf, self.message);
    }

    /// Decode a goaway's metadata.
    pub fn decode(meta: &'a [u8]) -> Result<GoAway<'a>, FrameError> {
        let mut input = meta;
        let last_call_id = take_u32(&mut input, "goaway last call id")?;
        let code = take_u32(&mut input, "goaway code")?;
        let message = take_str(&mut input, "goaway message")?;
        if !input.is_empty() {
            return Err(FrameError::malformed("goaway metadata", "trailing bytes"));
        }
        Ok(GoAway { last_call_id, code, message })
    }
}
