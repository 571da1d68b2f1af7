//! Go's `encoding/gob` as a serde codec ([`Codec::Gob`](super::Codec::Gob)),
//! sans-IO, so that courier can serve and call unchanged Go programs that
//! use `net/rpc` (`rpc.Dial`, `rpc.ServeConn`).
//!
//! Gob is a self-describing stream: each type is defined once per
//! connection (a `wireType` value under a fresh negative id), then values
//! refer to it by id. The wire format is in Go's `encoding/gob/doc.go`;
//! this module follows it and Go's encoder and decoder where the document
//! is silent.
//!
//! # Layout
//!
//! - [`Gob`] (`Codec::Gob`): a message is **self-contained**: zero or more
//!   definition messages, then exactly one value message, each length
//!   prefixed as on the wire. Go's `gob.NewDecoder` reads such bytes as
//!   they are. Type ids in it start at 65, as in a fresh Go stream.
//! - [`StreamDecoder`]: per connection, reading direction. Splits the
//!   peer's bytes into values and turns each into a self-contained message
//!   (the value preceded by the definitions it refers to).
//! - [`StreamEncoder`]: per connection, writing direction. Appends a
//!   self-contained message, sending only the definitions the stream has
//!   not carried yet, renumbered into the stream's own ids.
//! - Inside: `wire` (integers, floats, strings, message framing), `types`
//!   (`wireType` and friends, the type table), `ser` (a value captured as
//!   a tree), `shape` (types inferred from the tree, definitions and value
//!   written), `de` and `access` (the serde deserializer), `zero` (zero
//!   values of missing fields), `stream`.
//!
//! # Mapping
//!
//! - **Numbers**: `i8`..`i64`, `isize` are gob ints, `u16`..`u64`, `usize`
//!   gob uints, `f32`/`f64` floats, [`Complex`] gob's complex. A `u8` alone
//!   is a uint, but a sequence of `u8` (`Vec<u8>`, `&[u8]`, anything that
//!   calls `serialize_bytes`) is Go's `[]byte`. Go checks signedness: a Go
//!   `int` field takes only what Rust sends from a signed type, a Go
//!   `uint64` only from an unsigned one. Decoding checks ranges (300 into
//!   an `i8` is an error, not a wrap) and takes an int into an unsigned
//!   Rust type, or a uint into a signed one, when the value fits.
//! - **Strings**: `String`, `&str`, `char` are gob strings; a `char`
//!   decodes from a one-character string or from an integer (a Go rune).
//! - **Structs** are gob structs. A Rust field `user_id` is sent as Go's
//!   exported `UserId` (snake_case to PascalCase); a name that already
//!   starts with an uppercase letter (`#[serde(rename = "UserID")]`) is
//!   sent as it is. Decoding matches a wire field to the Rust field of the
//!   same name, or else of the same name ignoring case and underscores
//!   (`UserID` and `user_id`). Wire fields the Rust type lacks are skipped,
//!   as Go skips them.
//! - **Zero values**: as Go does, a struct field whose value is zero (0,
//!   false, "", an empty sequence, map or byte string, `None`) is left out
//!   of the value; a nested struct or a tuple (array) never is, even when
//!   all its fields are zero, and neither are top-level values nor the
//!   elements of sequences and maps. On decoding, every Rust field the
//!   wire did not carry gets its zero value (0, false, "", empty, `None`,
//!   a struct of zeros, an enum's first variant), so a plain
//!   `#[derive(Deserialize)]` struct decodes what Go sends. This includes
//!   fields with `#[serde(default)]`: a Go peer that left a field out
//!   meant zero, and gob cannot tell "absent" from "zero", so the zero wins
//!   over the serde default. `Some(0)` is sent as Go sends a pointer to 0:
//!   not at all (it decodes as `None`). Fields with `#[serde(alias)]`
//!   would be zero-filled under every alias, which serde rejects as a
//!   duplicate: do not use `alias` with gob. `#[serde(flatten)]` structs
//!   get no zero filling.
//! - **Types come from values**: a struct's definition lists the fields
//!   its value has. The elements of a sequence (the keys and values of a
//!   map) are merged into one type, so a `Vec` of structs where one
//!   element has a non-empty list and another an empty one defines the
//!   list's element type from the first. A struct field whose type no
//!   value shows (always empty, always `None`) is zero everywhere, is
//!   left out of the value, and is left out of the definition too.
//! - **Empty collections**: where no value shows an element type outside a
//!   struct field (an empty top-level `Vec`, the values of an empty map, an
//!   inner empty `Vec`), the element type is sent as `int` and a map key
//!   as `string`: so an empty `Vec<i64>` is a Go `[]int` and an empty
//!   `HashMap<String, i64>` a Go `map[string]int`, the common cases. Any
//!   other element type cannot be known from an empty value: Go then
//!   rejects the type ("wrong type"). An empty byte string sent with
//!   `serialize_bytes` is always `[]byte`; an empty `Vec<u8>` serialized as
//!   a sequence is not (it looks like any empty `Vec`).
//! - **`Option<T>`**: `Some(v)` is `v` (gob flattens Go pointers, so `*T`
//!   in Go is `Option<T>` or `T` in Rust). `None` as a struct field is
//!   omitted; at the top level or as an element of a sequence or map it is
//!   an error, as Go cannot send a nil pointer there either.
//! - **Unit, newtypes, tuples**: `()` and unit structs are empty structs;
//!   a newtype struct is its inner value; tuples, tuple structs and arrays
//!   are gob arrays (Go `[N]T`), so their elements must all have one type.
//! - **Enums**: a unit variant is a string with its name (a Go string
//!   constant); decoding also takes the variant's index as an integer (a Go
//!   `iota` constant). A variant with data is a struct with one field named
//!   after the variant (PascalCase), holding the data, and that field is
//!   sent even when zero. In a sequence mixing unit variants with variants
//!   that carry data, the unit variants become such structs too (holding
//!   an empty struct).
//! - **Maps**: any key type gob allows; `Vec<(K, V)>` is not a map.
//! - **Interfaces** (Go `interface{}`/`any` fields): a value Go sends in one
//!   is decoded as its concrete value (a nil interface as `None`, or the
//!   zero value); the definitions it brings mid-value are kept. Encoding
//!   never produces interface values. Go's `GobEncoder`/`BinaryMarshaler`
//!   values (`time.Time`, ...) decode as bytes.
//! - **`deserialize_any`** works (into `serde_json::Value`, say): structs
//!   come as maps keyed by the Go field names, complex numbers as
//!   `{"re": .., "im": ..}`, `[]byte` (and a string that is not UTF-8) as
//!   a sequence of numbers (`deserialize_bytes` gets them as bytes).
//!
//! # Limits
//!
//! Everything read from a peer is checked before it is used: every count
//! against the bytes actually left in its message (so nothing is sized
//! beyond the input), every message against [`Limits::max_message`], the
//! definitions of a stream against [`Limits::max_types`], nesting (of
//! values, and of zero values built for missing fields) against
//! [`Limits::max_depth`]. Recursive Go types (`type Node struct { Next
//! *Node }`) are fine: only values nest, and they end.
//!
//! A self-contained message repeats the definitions its value refers to, so
//! decoding a value costs up to the size of those definitions besides its
//! own (a stream's definitions are at most `max_message` bytes together): a
//! peer that defines a huge type and sends many tiny values of it makes
//! each of them that expensive. A value that spans several messages (an
//! interface value bringing new types) is read through again each time one
//! more of its messages is complete.

mod access;
mod de;
mod ser;
mod shape;
mod stream;
mod types;
mod wire;
mod zero;

#[cfg(test)]
mod tests;

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use stream::{StreamDecoder, StreamEncoder};

use super::{CodecError, SerdeCodec};

/// The serde name [`Complex`] serializes under, which the encoder turns
/// into gob's complex type.
const COMPLEX_NAME: &str = "$courier::gob::Complex";

/// Limits a stream decoder enforces; every length is checked against them
/// (and against the bytes actually present) before anything is allocated.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most bytes one message may have (and one value, with every
    /// message it spans; and a stream's definitions, together).
    pub max_message: usize,
    /// The most type definitions one stream (or one message) may make.
    pub max_types: usize,
    /// The most levels values may nest (structs, slices, arrays, maps,
    /// interfaces).
    pub max_depth: usize,
}

impl Default for Limits {
    /// 4 MiB messages, 1024 type definitions per stream, 64 levels.
    fn default() -> Limits {
        Limits { max_message: 4 << 20, max_types: 1024, max_depth: 64 }
    }
}

/// Gob could not encode or decode a value, or a stream is broken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GobError {
    /// The input ends inside something.
    #[error("the gob input ends inside {0}")]
    Truncated(&'static str),
    /// A message is longer than [`Limits::max_message`].
    #[error("a gob message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// More definitions than [`Limits::max_types`].
    #[error("more than {max} gob type definitions")]
    TooManyTypes {
        /// The limit.
        max: usize,
    },
    /// A type id defined a second time (Go: "duplicate type received").
    #[error("gob type id {0} is defined twice")]
    DuplicateType(i64),
    /// A type id used but never defined.
    #[error("gob type id {0} is used but not defined")]
    UndefinedType(i64),
    /// Values nest deeper than [`Limits::max_depth`].
    #[error("gob values nest deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The bytes are not gob.
    #[error("malformed gob: {0}")]
    Malformed(String),
    /// Valid gob this implementation does not handle.
    #[error("unsupported gob: {0}")]
    Unsupported(String),
    /// A value cannot be sent as gob.
    #[error("cannot encode as gob: {0}")]
    Encode(String),
    /// A gob value does not fit the Rust type.
    #[error("cannot decode the gob value: {0}")]
    Decode(String),
}

impl serde::ser::Error for GobError {
    fn custom<T: std::fmt::Display>(msg: T) -> GobError {
        GobError::Encode(msg.to_string())
    }
}

impl serde::de::Error for GobError {
    fn custom<T: std::fmt::Display>(msg: T) -> GobError {
        GobError::Decode(msg.to_string())
    }
}

/// A complex number: Go's `complex64` and `complex128` travel as gob's
/// complex type, which this serializes to (through any other serde format
/// it is a plain struct `{re, im}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename = "$courier::gob::Complex")]
pub struct Complex {
    /// The real part.
    pub re: f64,
    /// The imaginary part.
    pub im: f64,
}

/// The gob codec (codec id 4). Messages are self-contained (see the
/// module docs, "Layout"); [`StreamDecoder`] and [`StreamEncoder`] map them
/// to and from a connection's stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gob;

impl SerdeCodec for Gob {
    const ID: u8 = 4;
    const NAME: &'static str = "gob";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), CodecError> {
        let message = to_message(value)
            .map_err(|err| CodecError::Encode { codec: Self::NAME, message: err.to_string() })?;
        out.extend_from_slice(&message);
        Ok(())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        from_message(bytes).map_err(|err| CodecError::Decode { codec: Self::NAME, message: err.to_string() })
    }
}

/// Encode `value` as a self-contained message.
///
/// # Errors
///
/// See the module docs: `None` where gob has no nil, values of one
/// sequence that cannot be one type, nesting beyond the default
/// [`Limits::max_depth`], integers beyond 64 bits.
pub fn to_message<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, GobError> {
    let node = ser::capture(value, Limits::default().max_depth)?;
    let mut out = Vec::new();
    shape::write_message(&node, &mut out)?;
    Ok(out)
}

/// Decode a self-contained message, within the default [`Limits`].
///
/// # Errors
///
/// The bytes are not one self-contained gob message, or its value does not
/// fit `T`.
pub fn from_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GobError> {
    de::from_message(bytes, Limits::default())
}

/// Decode a self-contained message within `limits`.
///
/// # Errors
///
/// As [`from_message`], and when the message exceeds `limits`.
pub fn from_message_with_limits<T: DeserializeOwned>(bytes: &[u8], limits: Limits) -> Result<T, GobError> {
    de::from_message(bytes, limits)
}
