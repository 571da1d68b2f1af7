//! Protocol buffers, for services generated from `.proto` files by
//! `courier-build` (cargo feature `protobuf`, on by default).
//!
//! Generated messages are prost structs that also derive serde, so one
//! `.proto` service speaks protobuf (natively and over gRPC) and JSON (over
//! `application/grpc+json`, JSON-RPC and HTTP/JSON). Their JSON is serde's
//! view of the prost struct: field names as written in the `.proto`, enums
//! as numbers, 64-bit integers as numbers, well-known types as plain
//! messages. That is what proto3's JSON parsers accept for field names, but
//! it is not the canonical proto3 JSON mapping in every detail.

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Codec, CodecError};

/// The bound every generated message meets.
pub trait Message: prost::Message + Default + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: prost::Message + Default + Serialize + DeserializeOwned + Send + Sync + 'static> Message for T {}

/// Append `message` to `out` in `codec`.
pub fn encode<M: Message>(codec: Codec, message: &M, out: &mut BytesMut) -> Result<(), CodecError> {
    match codec {
        Codec::Protobuf => {
            out.reserve(message.encoded_len());
            message
                .encode(out)
                .map_err(|err| CodecError::Encode { codec: Codec::Protobuf.name(), message: err.to_string() })
        }
        serde_codec => serde_codec.encode(message, out),
    }
}

/// Decode a whole `M` from `bytes` in `codec`.
pub fn decode<M: Message>(codec: Codec, bytes: &[u8]) -> Result<M, CodecError> {
    match codec {
        Codec::Protobuf => M::decode(bytes)
            .map_err(|err| CodecError::Decode { codec: Codec::Protobuf.name(), message: err.to_string() }),
        serde_codec => serde_codec.decode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
    #[serde(default)]
    struct Hello {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(int64, tag = "2")]
        count: i64,
    }

    #[test]
    fn a_message_round_trips_in_every_codec() {
        let hello = Hello { name: "ada".into(), count: 3 };
        for codec in [Codec::Protobuf, Codec::Json, Codec::Binary] {
            let mut buf = BytesMut::new();
            encode(codec, &hello, &mut buf).expect("encode");
            assert_eq!(decode::<Hello>(codec, &buf).expect("decode"), hello, "{codec}");
        }
        let mut buf = BytesMut::new();
        encode(Codec::Protobuf, &hello, &mut buf).expect("encode");
        assert_eq!(&buf[..], b"\x0a\x03ada\x10\x03", "standard protobuf bytes");
    }

    #[test]
    fn json_fields_may_be_missing_and_garbage_is_an_error() {
        let hello: Hello = decode(Codec::Json, br#"{"name":"x"}"#).expect("defaults fill the rest");
        assert_eq!(hello.count, 0);
        assert!(decode::<Hello>(Codec::Protobuf, b"\xff\xff\xff").is_err());
    }

    #[test]
    fn serde_codecs_refuse_protobuf() {
        assert!(matches!(Codec::Protobuf.encode(&1_u8, &mut BytesMut::new()), Err(CodecError::NotSerde)));
        assert!(matches!(Codec::Protobuf.decode::<u8>(b""), Err(CodecError::NotSerde)));
    }
}
