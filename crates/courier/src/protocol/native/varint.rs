//! LEB128 variable-length integers, as used inside frame metadata.

use bytes::BufMut;

use super::FrameError;

/// The longest LEB128 encoding of a `u64`.
const MAX_LEN: usize = 10;

/// Append `value` as an unsigned LEB128 varint.
pub(crate) fn put(buf: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Read a varint from the front of `input`, advancing it.
pub(crate) fn take(input: &mut &[u8], what: &'static str) -> Result<u64, FrameError> {
    let mut value: u64 = 0;
    for (index, &byte) in input.iter().enumerate().take(MAX_LEN) {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only carry the single top bit of a u64.
        if index == MAX_LEN - 1 && byte > 1 {
            return Err(FrameError::malformed(what, "varint overflows 64 bits"));
        }
        value |= bits << (7 * index);
        if byte & 0x80 == 0 {
            *input = &input[index + 1..];
            return Ok(value);
        }
    }
    if input.len() >= MAX_LEN {
        Err(FrameError::malformed(what, "varint longer than 10 bytes"))
    } else {
        Err(FrameError::malformed(what, "truncated varint"))
    }
}

/// Read a varint that must fit a `usize` length.
pub(crate) fn take_len(input: &mut &[u8], what: &'static str) -> Result<usize, FrameError> {
    let len = take(input, what)?;
    usize::try_from(len).map_err(|_| FrameError::malformed(what, "length does not fit in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put(&mut buf, value);
            let mut input = buf.as_slice();
            assert_eq!(take(&mut input, "test").ok(), Some(value));
            assert!(input.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut input: &[u8] = &[0x80, 0x80];
        assert!(take(&mut input, "test").is_err());
        let mut input: &[u8] = &[0xff; 11];
        assert!(take(&mut input, "test").is_err());
        // Ten bytes whose last carries more than the one remaining bit.
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(take(&mut input, "test").is_err());
    }

    #[test]
    fn errors_say_which_way_a_varint_is_wrong() {
        let err = |bytes: &[u8]| {
            let mut input = bytes;
            take(&mut input, "test").expect_err("not a valid varint")
        };
        assert_eq!(err(&[0x80; 9]), FrameError::malformed("test", "truncated varint"));
        // Ten or more bytes always end at the tenth: it either stops the
        // varint (0 or 1) or overflows, however many bytes follow.
        let overflows = FrameError::malformed("test", "varint overflows 64 bits");
        assert_eq!(err(&[0x80; 10]), overflows);
        assert_eq!(err(&[0xff; 11]), overflows);
        let mut overflow = [0xff; 10];
        overflow[9] = 0x02;
        assert_eq!(err(&overflow), overflows);
        // A failed read leaves the input where it was.
        let mut input: &[u8] = &[0x80, 0x80];
        assert!(take(&mut input, "test").is_err());
        assert_eq!(input.len(), 2);
    }

    #[test]
    fn the_encoding_is_little_endian_groups_of_seven_bits() {
        let encode = |value: u64| {
            let mut buf = Vec::new();
            put(&mut buf, value);
            buf
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        // Only the bytes of the varint are taken.
        let mut input: &[u8] = &[0xac, 0x02, 0x05];
        assert_eq!(take_len(&mut input, "test"), Ok(300));
        assert_eq!(input, [0x05]);
    }
}
