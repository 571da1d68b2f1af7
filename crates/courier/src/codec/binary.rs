//! The compact binary codec: postcard.
//!
//! Chosen by measurement against bincode 2, bitcode, MessagePack
//! (rmp-serde) and CBOR (ciborium) on RPC-sized payloads: postcard matched
//! the fastest (about 5 ns to encode a two-integer argument struct, 180 ns
//! to decode a ten-field record), produced the smallest messages (2 bytes
//! for `{a: 10, b: 20}`), has a documented wire format that is stable since
//! 1.0, and is maintained (bincode no longer is). The numbers are in
//! `docs/PERFORMANCE.md`.
//!
//! Like every non-self-describing format, it cannot carry serde's
//! `#[serde(untagged)]`, `#[serde(flatten)]`, internally tagged enums
//! (`#[serde(tag = "..")]`) or fields skipped with `skip_serializing_if`:
//! types using those fail to decode. Use [`Codec::Json`](super::Codec::Json)
//! for them. Byte payloads are much faster with `#[serde(with = "serde_bytes")]`.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CodecError, SerdeCodec};

/// The compact binary codec (postcard). Codec id 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct Binary;

impl SerdeCodec for Binary {
    const ID: u8 = 1;
    const NAME: &'static str = "binary";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), CodecError> {
        let start = out.len();
        postcard::serialize_with_flavor(value, AppendTo(out)).map_err(|err| {
            out.truncate(start);
            CodecError::Encode { codec: Self::NAME, message: err.to_string() }
        })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, rest) = postcard::take_from_bytes(bytes).map_err(|err| CodecError::Decode {
            codec: Self::NAME,
            message: format!("{err} (types using serde's untagged, flatten, tag or skip_serializing_if need the JSON codec)"),
        })?;
        if !rest.is_empty() {
            return Err(CodecError::Decode {
                codec: Self::NAME,
                message: format!("{} unexpected bytes after the message", rest.len()),
            });
        }
        Ok(value)
    }
}

/// A postcard output that appends to a caller's buffer. postcard's own
/// `to_extend` moves a `Vec` in and out per call, which measured 5x slower
/// on small messages than appending in place.
struct AppendTo<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut buf = BytesMut::new();
        Binary::encode(&7_u8, &mut buf).expect("encode");
        buf.extend_from_slice(&[1, 2]);
        assert!(Binary::decode::<u8>(&buf).is_err());
    }

    #[test]
    fn two_integers_take_two_bytes() {
        let mut buf = BytesMut::new();
        Binary::encode(&(10_i64, 20_i64), &mut buf).expect("encode");
        assert_eq!(buf.len(), 2);
    }
}
