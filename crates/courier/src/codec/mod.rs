//! Codecs: how arguments and results become bytes.
//!
//! A [`Codec`] is chosen per client or per call and named in every request
//! frame by its id; the server answers in the codec it was called with, so
//! clients with different codecs share one server.
//!
//! - [`Codec::Binary`] (default): compact and fast, see [`binary`].
//! - [`Codec::Json`]: `serde_json`; readable, and what the JSON-speaking
//!   protocols use.
//! - [`Codec::Protobuf`]: protocol buffers, for services generated from
//!   `.proto` files by `courier-build` (see [`protobuf`]); serde types
//!   cannot use it.
//! - [`Codec::Gob`]: Go's `encoding/gob`, for Go `net/rpc` peers (see
//!   [`gob`]); each message self-contained.

pub mod binary;
pub mod gob;
pub mod json;
pub mod lenient;
#[cfg(feature = "protobuf")]
pub mod protobuf;

use std::fmt;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A serde-based codec. Implemented by [`json::Json`], [`binary::Binary`]
/// and [`gob::Gob`];
/// [`Codec`] dispatches to them by id.
pub trait SerdeCodec {
    /// The id carried in frame headers.
    const ID: u8;
    /// A short name for messages and logs.
    const NAME: &'static str;
    /// Append the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), CodecError>;
    /// Decode a whole message from `bytes`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// The codecs a call can use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// The compact binary codec (see [`binary`]).
    #[default]
    Binary,
    /// JSON via `serde_json`.
    Json,
    /// Protocol buffers (prost), for `.proto` services only.
    Protobuf,
    /// Go's `encoding/gob` (see [`gob`]), for Go `net/rpc` peers.
    Gob,
}

/// The codec id of [`Codec::Protobuf`].
pub const PROTOBUF_ID: u8 = 3;

impl Codec {
    /// The id carried in frame headers.
    pub const fn id(self) -> u8 {
        match self {
            Codec::Binary => binary::Binary::ID,
            Codec::Json => json::Json::ID,
            Codec::Protobuf => PROTOBUF_ID,
            Codec::Gob => gob::Gob::ID,
        }
    }

    /// The codec for a header id.
    pub fn from_id(id: u8) -> Option<Codec> {
        match id {
            binary::Binary::ID => Some(Codec::Binary),
            json::Json::ID => Some(Codec::Json),
            PROTOBUF_ID => Some(Codec::Protobuf),
            gob::Gob::ID => Some(Codec::Gob),
            _ => None,
        }
    }

    /// A short name (`binary`, `json`, `protobuf`, `gob`).
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Binary => binary::Binary::NAME,
            Codec::Json => json::Json::NAME,
            Codec::Protobuf => "protobuf",
            Codec::Gob => gob::Gob::NAME,
        }
    }

    /// Append the serde encoding of `value` to `out`. Fails for
    /// [`Codec::Protobuf`], which encodes only generated messages.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T, out: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Codec::Binary => binary::Binary::encode(value, out),
            Codec::Json => json::Json::encode(value, out),
            Codec::Gob => gob::Gob::encode(value, out),
            Codec::Protobuf => Err(CodecError::NotSerde),
        }
    }

    /// Decode a whole serde message from `bytes`. Fails for
    /// [`Codec::Protobuf`], which decodes only generated messages.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Binary => binary::Binary::decode(bytes),
            Codec::Json => json::Json::decode(bytes),
            Codec::Gob => gob::Gob::decode(bytes),
            Codec::Protobuf => Err(CodecError::NotSerde),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serialization failed (for example a map with non-string keys in JSON).
    #[error("{codec} encoding failed: {message}")]
    Encode {
        /// The codec's name.
        codec: &'static str,
        /// The serializer's message.
        message: String,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("{codec} decoding failed: {message}")]
    Decode {
        /// The codec's name.
        codec: &'static str,
        /// The deserializer's message.
        message: String,
    },
    /// A frame named a codec id this build does not know.
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    /// Protobuf was asked to encode a serde type (or the reverse).
    #[error(
        "protobuf carries only messages generated from .proto files (courier-build); serde types use the binary or JSON codec"
    )]
    NotSerde,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
        address: Option<Address>,
        attributes: HashMap<String, String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Address {
        city: String,
        zip: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum CalcError {
        DivisionByZero,
        Overflow { limit: i64 },
    }

    #[test]
    fn every_codec_round_trips_structs_enums_and_unit() {
        let user = User {
            id: 7,
            name: "ada".into(),
            tags: vec!["a".into(), "b".into()],
            address: Some(Address { city: "London".into(), zip: 1815 }),
            attributes: [("k".to_owned(), "v".to_owned())].into(),
        };
        for codec in [Codec::Binary, Codec::Json, Codec::Gob] {
            assert_eq!(Codec::from_id(codec.id()), Some(codec));
            let mut buf = BytesMut::new();
            codec.encode(&user, &mut buf).expect("encode");
            assert_eq!(codec.decode::<User>(&buf).expect("decode"), user, "{codec}");

            let mut buf = BytesMut::new();
            codec.encode(&CalcError::Overflow { limit: 9 }, &mut buf).expect("encode");
            assert_eq!(codec.decode::<CalcError>(&buf).expect("decode"), CalcError::Overflow { limit: 9 });

            let mut buf = BytesMut::new();
            codec.encode(&(), &mut buf).expect("encode");
            codec.decode::<()>(&buf).expect("decode unit");
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for codec in [Codec::Binary, Codec::Json, Codec::Gob] {
            let err = codec.decode::<User>(b"\xff\xff\xff\xff\xff\xff").expect_err("garbage");
            assert!(matches!(err, CodecError::Decode { .. }), "{codec}: {err}");
        }
        assert_eq!(Codec::from_id(200), None);
    }

    #[test]
    fn ids_and_names_are_distinct() {
        let codecs = [Codec::Binary, Codec::Json, Codec::Protobuf, Codec::Gob];
        for (i, a) in codecs.iter().enumerate() {
            assert_eq!(Codec::from_id(a.id()), Some(*a));
            for b in &codecs[i + 1..] {
                assert_ne!(a.id(), b.id());
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(
            (Codec::Gob.id(), Codec::Gob.name(), Codec::Gob.to_string()),
            (4, "gob", "gob".to_owned())
        );
    }

    #[test]
    fn encoding_appends_to_what_is_already_buffered() {
        for codec in [Codec::Binary, Codec::Json, Codec::Gob] {
            let mut buf = BytesMut::from(&b"head"[..]);
            codec.encode(&42_u32, &mut buf).expect("encode");
            assert_eq!(&buf[..4], b"head");
            assert_eq!(codec.decode::<u32>(&buf[4..]).expect("decode"), 42);
        }
    }
}
