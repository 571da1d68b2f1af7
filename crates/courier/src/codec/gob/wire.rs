//! Gob's primitives (doc.go, "Encoding Details") and its length-prefixed
//! messages.
//!
//! Everything here reads peer bytes, so every read is checked against the
//! end of the current message, and every count read from the peer is
//! checked against the bytes that remain before anything is sized by it.

use super::GobError;

/// Append `value` as a gob uint: below 128 one byte, else the negated byte
/// count and the value big-endian with its leading zero bytes dropped.
pub(crate) fn put_uint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        // Fits: `value < 128`.
        out.push(value as u8);
        return;
    }
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    let significant = bytes.get(skip..).unwrap_or(&bytes);
    // `significant.len()` is 1..=8, so the negation fits a byte.
    out.push((significant.len() as u8).wrapping_neg());
    out.extend_from_slice(significant);
}

/// Append `value` as a gob int: the low bit of the uint says whether the
/// rest is complemented, so the most negative value is no special case.
pub(crate) fn put_int(out: &mut Vec<u8>, value: i64) {
    put_uint(out, zigzag(value));
}

/// The uint that carries the int `value`.
pub(crate) fn zigzag(value: i64) -> u64 {
    if value < 0 { (!(value as u64) << 1) | 1 } else { (value as u64) << 1 }
}

/// The int a uint carries (the inverse of [`zigzag`]).
pub(crate) fn unzigzag(value: u64) -> i64 {
    let magnitude = (value >> 1) as i64;
    if value & 1 != 0 { !magnitude } else { magnitude }
}

/// Append a float: its IEEE bits byte-reversed, so the exponent goes first
/// and the (often zero) low mantissa bytes are dropped by the uint form.
pub(crate) fn put_float(out: &mut Vec<u8>, value: f64) {
    put_uint(out, value.to_bits().swap_bytes());
}

/// The float a uint carries (the inverse of [`put_float`]).
pub(crate) fn float_from_uint(value: u64) -> f64 {
    f64::from_bits(value.swap_bytes())
}

/// Append a string or byte slice: its length, then its bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Append one message: its length as a uint, then `body`.
pub(crate) fn put_message(out: &mut Vec<u8>, body: &[u8]) {
    put_uint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// How a uint at the start of `bytes` reads.
pub(crate) enum Peek {
    /// More bytes are needed to know.
    Incomplete,
    /// The value and how many bytes it took.
    Done(u64, usize),
}

/// Read a uint from the start of `bytes` without needing the bytes after
/// it; a count byte claiming more than eight bytes is an error (Go's
/// `errBadUint`).
pub(crate) fn peek_uint(bytes: &[u8]) -> Result<Peek, GobError> {
    let Some(&first) = bytes.first() else { return Ok(Peek::Incomplete) };
    if first < 0x80 {
        return Ok(Peek::Done(u64::from(first), 1));
    }
    let count = usize::from(first.wrapping_neg());
    if count > 8 {
        return Err(GobError::Malformed(format!("a uint claims {count} bytes (at most 8)")));
    }
    let Some(digits) = bytes.get(1..=count) else { return Ok(Peek::Incomplete) };
    let value = digits.iter().fold(0_u64, |acc, &byte| (acc << 8) | u64::from(byte));
    Ok(Peek::Done(value, 1 + count))
}

/// The frame of the message at the start of `bytes`: the length of its
/// prefix and of its body, once both are complete; `Ok(None)` if more
/// bytes are needed. An empty or oversized message is an error before any
/// of its body is waited for.
pub(crate) fn frame(bytes: &[u8], max_message: usize) -> Result<Option<(usize, usize)>, GobError> {
    let (len, prefix) = match peek_uint(bytes)? {
        Peek::Incomplete => return Ok(None),
        Peek::Done(len, prefix) => (len, prefix),
    };
    check_message_len(len, max_message)?;
    // Checked above: `len <= max_message`, a usize.
    let len = len as usize;
    if bytes.len() - prefix < len {
        return Ok(None);
    }
    Ok(Some((prefix, len)))
}

fn check_message_len(len: u64, max_message: usize) -> Result<(), GobError> {
    if len == 0 {
        return Err(GobError::Malformed("an empty message".to_owned()));
    }
    if len > max_message as u64 {
        return Err(GobError::MessageTooLarge { len, max: max_message });
    }
    Ok(())
}

/// A cursor over a run of messages: reads stay inside the current message
/// (`msg_end`), and only [`Reader::next_message`] moves to the next one.
#[derive(Debug)]
pub(crate) struct Reader<'de> {
    input: &'de [u8],
    pos: usize,
    msg_end: usize,
    max_message: usize,
    /// The most bytes the messages read so far may add up to (a value
    /// spanning several messages counts them all).
    max_total: usize,
    /// Set when a read failed only because `input` ends early: a stream
    /// decoder waits for more bytes instead of failing.
    pub(crate) wants_more: bool,
}

impl<'de> Reader<'de> {
    /// A reader before the first message of `input`.
    pub(crate) fn new(input: &'de [u8], max_message: usize, max_total: usize) -> Reader<'de> {
        Reader { input, pos: 0, msg_end: 0, max_message, max_total, wants_more: false }
    }

    /// Where the reader is in `input`.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Where the current message ends in `input`.
    pub(crate) fn message_end(&self) -> usize {
        self.msg_end
    }

    /// Whether the current message is used up.
    pub(crate) fn at_message_end(&self) -> bool {
        self.pos >= self.msg_end
    }

    /// Whether every byte of `input` is used up.
    pub(crate) fn at_input_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// The bytes left in the current message.
    pub(crate) fn remaining(&self) -> usize {
        self.msg_end.saturating_sub(self.pos)
    }

    /// The bytes from `start` to the current position.
    pub(crate) fn since(&self, start: usize) -> &'de [u8] {
        self.input.get(start..self.pos).unwrap_or(&[])
    }

    /// Step over the length prefix of the next message, which must follow
    /// the current one, and make it current.
    pub(crate) fn next_message(&mut self) -> Result<(), GobError> {
        if self.pos < self.msg_end {
            return Err(GobError::Malformed("a message has bytes left where the next should begin".into()));
        }
        let rest = self.input.get(self.pos..).unwrap_or(&[]);
        let (len, prefix) = match peek_uint(rest)? {
            Peek::Incomplete => {
                self.wants_more = true;
                return Err(GobError::Truncated("a message length"));
            }
            Peek::Done(len, prefix) => (len, prefix),
        };
        check_message_len(len, self.max_message)?;
        let len = len as usize;
        let end = self.pos.saturating_add(prefix).saturating_add(len);
        if end > self.max_total {
            return Err(GobError::MessageTooLarge { len: end as u64, max: self.max_total });
        }
        if end > self.input.len() {
            self.wants_more = true;
            return Err(GobError::Truncated("a message"));
        }
        self.pos += prefix;
        self.msg_end = end;
        Ok(())
    }

    /// A uint (see [`put_uint`]).
    pub(crate) fn read_uint(&mut self, what: &'static str) -> Result<u64, GobError> {
        let rest = self.input.get(self.pos..self.msg_end).unwrap_or(&[]);
        match peek_uint(rest)? {
            Peek::Incomplete => Err(GobError::Truncated(what)),
            Peek::Done(value, len) => {
                self.pos += len;
                Ok(value)
            }
        }
    }

    /// An int (see [`put_int`]).
    pub(crate) fn read_int(&mut self, what: &'static str) -> Result<i64, GobError> {
        self.read_uint(what).map(unzigzag)
    }

    /// A float (see [`put_float`]).
    pub(crate) fn read_float(&mut self, what: &'static str) -> Result<f64, GobError> {
        self.read_uint(what).map(float_from_uint)
    }

    /// A count of items that take at least `min_item` bytes each: more
    /// than the message can hold is an error, so nothing sized by the count
    /// can exceed the bytes present.
    pub(crate) fn read_count(&mut self, what: &'static str, min_item: usize) -> Result<usize, GobError> {
        let count = self.read_uint(what)?;
        let room = (self.remaining() / min_item.max(1)) as u64;
        if count > room {
            return Err(GobError::Malformed(format!(
                "{what} of {count} exceeds the {} bytes left in the message",
                self.remaining()
            )));
        }
        // At most `remaining()`, a usize.
        Ok(count as usize)
    }

    /// `len` bytes, which must be in the current message.
    pub(crate) fn read_raw(&mut self, len: usize, what: &'static str) -> Result<&'de [u8], GobError> {
        if len > self.remaining() {
            return Err(GobError::Truncated(what));
        }
        let bytes = self.input.get(self.pos..self.pos + len).ok_or(GobError::Truncated(what))?;
        self.pos += len;
        Ok(bytes)
    }

    /// A length-prefixed run of bytes (a string, a []byte).
    pub(crate) fn read_bytes(&mut self, what: &'static str) -> Result<&'de [u8], GobError> {
        let len = self.read_count(what, 1)?;
        self.read_raw(len, what)
    }
}
