//! The JSON codec (`serde_json`).

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CodecError, SerdeCodec};

/// JSON via `serde_json`. Codec id 2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl SerdeCodec for Json {
    const ID: u8 = 2;
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), CodecError> {
        serde_json::to_writer(out.writer(), value)
            .map_err(|err| CodecError::Encode { codec: Self::NAME, message: err.to_string() })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes)
            .map_err(|err| CodecError::Decode { codec: Self::NAME, message: err.to_string() })
    }
}
