//! gRPC's framing and headers, sans-IO (cargo feature `grpc`).
//!
//! What rides on HTTP/2 for one gRPC call: request headers (`:path
//! /Service/Method`, `content-type: application/grpc[+proto|+json]`,
//! `grpc-timeout`, `grpc-encoding`, metadata), a body of length-prefixed
//! messages (one byte "compressed" flag, four bytes big-endian length, the
//! message), and trailers (`grpc-status`, `grpc-message` percent-encoded,
//! `grpc-status-details-bin`, a base64 `google.rpc.Status`). This module
//! turns those into values and back; the server and client in `server/grpc`
//! and `client/grpc` move them over h2.

pub mod reflection;

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use http::{HeaderMap, HeaderValue};

use crate::codec::Codec;
use crate::status::{Code, Status};

/// gRPC's header names, parsed once (a `&str` key is parsed on every use).
pub mod names {
    use http::HeaderName;

    /// `grpc-status`.
    pub const STATUS: HeaderName = HeaderName::from_static("grpc-status");
    /// `grpc-message`.
    pub const MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
    /// `grpc-status-details-bin`.
    pub const STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
    /// `grpc-timeout`.
    pub const TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    /// `grpc-encoding`.
    pub const ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
    /// `grpc-accept-encoding`.
    pub const ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
}

/// The length prefix of every message.
pub const PREFIX_LEN: usize = 5;

/// Append one message with its prefix.
pub fn encode_message(buf: &mut BytesMut, compressed: bool, message: &[u8]) -> Result<(), GrpcError> {
    let len = u32::try_from(message.len())
        .map_err(|_| GrpcError::TooLarge { len: message.len(), max: u32::MAX as usize })?;
    buf.reserve(PREFIX_LEN + message.len());
    buf.put_u8(u8::from(compressed));
    buf.put_u32(len);
    buf.put_slice(message);
    Ok(())
}

/// A message split off a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Whether it is compressed with the call's `grpc-encoding`.
    pub compressed: bool,
    /// The (possibly compressed) message bytes.
    pub data: Bytes,
}

/// What can be wrong with a gRPC body or header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// A message longer than the limit.
    #[error("a message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its length (as declared, or after decompression).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The compressed flag is neither 0 nor 1.
    #[error("invalid compressed flag {0} in a message prefix")]
    BadFlag(u8),
    /// The body ended inside a message.
    #[error("the body ended {missing} bytes short of a complete message")]
    Truncated {
        /// Bytes still expected.
        missing: usize,
    },
    /// A compressed message that does not decompress.
    #[error("the message does not decompress: {0}")]
    Decompress(String),
    /// A message flagged compressed on a call that named no compression.
    #[error("a message is flagged compressed but the call declared no grpc-encoding")]
    UndeclaredCompression,
}

/// The most a decoder reserves ahead of bytes that have arrived.
const RESERVE_STEP: usize = 64 * 1024;

/// Splits a stream of body chunks into messages, checking each declared
/// length against the limit before buffering it.
#[derive(Debug)]
pub struct MessageDecoder {
    buf: BytesMut,
    max_message: usize,
}

impl MessageDecoder {
    /// A decoder that refuses messages longer than `max_message`.
    pub fn new(max_message: usize) -> MessageDecoder {
        MessageDecoder { buf: BytesMut::new(), max_message }
    }

    /// Add a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, GrpcError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let flag = self.buf[0];
        if flag > 1 {
            return Err(GrpcError::BadFlag(flag));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max_message {
            return Err(GrpcError::TooLarge { len, max: self.max_message });
        }
        if self.buf.len() < PREFIX_LEN + len {
            // Room for the rest, but at most a step at a time: a declared
            // length is a claim, and a peer could declare the limit on
            // many streams and send nothing more. Beyond the step the
            // buffer grows as bytes actually arrive.
            self.buf.reserve((PREFIX_LEN + len - self.buf.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        let data = self.buf.split_to(len).freeze();
        Ok(Some(Message { compressed: flag == 1, data }))
    }

    /// The declared length (prefix included) of the message being
    /// received, once its prefix has arrived and until it is taken; the
    /// length is not checked here ([`MessageDecoder::next_message`] does).
    pub fn pending_len(&self) -> Option<usize> {
        let prefix = self.buf.first_chunk::<PREFIX_LEN>()?;
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        Some(PREFIX_LEN.saturating_add(len))
    }

    /// Bytes buffered that do not (yet) form a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// At the end of the body: an error if a message was cut short
    /// (whole messages not yet taken are stepped over).
    pub fn finish(&self) -> Result<(), GrpcError> {
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            if rest.len() < PREFIX_LEN {
                return Err(GrpcError::Truncated { missing: PREFIX_LEN - rest.len() });
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let end = PREFIX_LEN.saturating_add(len);
            match rest.get(end..) {
                Some(after) => rest = after,
                None => return Err(GrpcError::Truncated { missing: end - rest.len() }),
            }
        }
        Ok(())
    }
}

/// The message compressions courier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// The encoding a `grpc-encoding` header names, if supported.
    pub fn parse(value: &str) -> Option<Encoding> {
        match value.trim() {
            "identity" => Some(Encoding::Identity),
            "gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }

    /// Its header value.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
        }
    }
}

/// What courier accepts, for `grpc-accept-encoding`.
pub const ACCEPT_ENCODING: &str = "gzip,identity";

/// Whether a `grpc-accept-encoding` value includes gzip.
pub fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|encoding| encoding.trim() == "gzip")
}

/// gzip `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// gunzip `data`, refusing output over `max` bytes (a small message can
/// inflate enormously: the limit applies to what it becomes).
pub fn gunzip(data: &[u8], max: usize) -> Result<Bytes, GrpcError> {
    let mut decoder = flate2::read::GzDecoder::new(data).take(max as u64 + 1);
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).map_err(|err| GrpcError::Decompress(err.to_string()))?;
    if out.len() > max {
        return Err(GrpcError::TooLarge { len: out.len(), max });
    }
    Ok(Bytes::from(out))
}

/// The message's bytes, decompressed if it says it is compressed.
pub fn decompress(message: Message, encoding: Encoding, max_message: usize) -> Result<Bytes, GrpcError> {
    match (message.compressed, encoding) {
        (false, _) => Ok(message.data),
        (true, Encoding::Gzip) => gunzip(&message.data, max_message),
        (true, Encoding::Identity) => Err(GrpcError::UndeclaredCompression),
    }
}

/// The codec a `content-type` asks for: `application/grpc` and `+proto`
/// mean protobuf, `+json` JSON. `None` for anything else, except `+data`:
/// Apache Dubbo-python's Triple client sends it for every call, whatever
/// its serializer wrote (protobuf, to gRPC servers), and grpc-go and
/// grpc-java read a subtype they do not know as protobuf.
pub fn codec_of_content_type(content_type: &str) -> Option<Codec> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let rest = essence.strip_prefix("application/grpc")?;
    match rest {
        "" | "+proto" | "+data" => Some(Codec::Protobuf),
        "+json" => Some(Codec::Json),
        _ => None,
    }
}

/// The `content-type` for calls in `codec` (the binary codec is native only).
pub fn content_type_of(codec: Codec) -> &'static str {
    match codec {
        Codec::Json => "application/grpc+json",
        _ => "application/grpc",
    }
}

/// Parse a `grpc-timeout` value: up to eight digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    // Not `split_at`: the last character may be several bytes long.
    let (digits, unit) = value.split_at_checked(value.len() - 1)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Format a timeout for `grpc-timeout`, in the finest unit that fits
/// eight digits (rounding up, so the server never sees less time).
pub fn format_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let amount = nanos.div_ceil(per);
        if amount <= MAX {
            return format!("{amount}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Percent-encode a status message for `grpc-message`.
pub fn encode_message_header(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decode a `grpc-message` header; invalid escapes are kept as they are,
/// as the spec asks.
pub fn decode_message_header(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && i + 2 < value.len()
            && let (Some(hi), Some(lo)) = (hex(value[i + 1]), hex(value[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The status a non-gRPC HTTP answer means (gRPC's HTTP-to-status table).
pub fn code_of_http_status(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// `google.rpc.Status`, the payload of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// The `Any` type of a service's own error (encoded in the call's codec).
pub const APP_ERROR_TYPE: &str = "type.courier.rs/courier.ApplicationError";
/// The `Any` type of other status details courier sends.
pub const DETAILS_TYPE: &str = "type.courier.rs/courier.StatusDetails";

/// The `grpc-status-details-bin` value for `status`, if it has details.
pub fn details_header(status: &Status) -> Option<String> {
    if status.details().is_empty() && !status.is_application_error() {
        return None;
    }
    let type_url = if status.is_application_error() { APP_ERROR_TYPE } else { DETAILS_TYPE };
    let rpc = RpcStatus {
        code: i32::try_from(status.code().as_u32()).unwrap_or(2),
        message: status.message().to_owned(),
        details: vec![prost_types::Any { type_url: type_url.to_owned(), value: status.details().to_vec() }],
    };
    Some(base64::engine::general_purpose::STANDARD_NO_PAD.encode(prost::Message::encode_to_vec(&rpc)))
}

/// The status a gRPC answer carries: its code, message and details.
/// Details courier sent come back as they were; another server's
/// `google.rpc.Status` is kept whole, encoded, as the details.
pub fn status_from_parts(code: u32, message: String, details_bin: Option<&[u8]>) -> Status {
    let code = Code::from_u32(code);
    let Some(raw) = details_bin.and_then(decode_base64) else {
        return Status::new(code, message);
    };
    if let Ok(rpc) = <RpcStatus as prost::Message>::decode(&raw[..])
        && let [any] = &rpc.details[..]
    {
        if any.type_url == APP_ERROR_TYPE {
            return Status::application(code, message, Bytes::from(any.value.clone()));
        }
        if any.type_url == DETAILS_TYPE {
            return Status::new(code, message).with_details(Bytes::from(any.value.clone()));
        }
    }
    Status::new(code, message).with_details(Bytes::from(raw))
}

/// Decode base64 with or without padding (gRPC peers send either).
pub fn decode_base64(value: &[u8]) -> Option<Vec<u8>> {
    let trimmed: &[u8] = value.strip_suffix(b"==").or_else(|| value.strip_suffix(b"=")).unwrap_or(value);
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed).ok()
}

/// Encode binary metadata (`-bin` keys) the way gRPC sends it.
pub fn encode_base64(value: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(value)
}

pub use super::headers::{is_reserved_header, metadata_of, put_metadata};

/// A status as gRPC header fields.
pub fn put_status(headers: &mut HeaderMap, status: &Status) {
    let code = if status.code() == Code::Ok { Code::Unknown } else { status.code() };
    headers.insert(names::STATUS, HeaderValue::from(code.as_u32()));
    if let Ok(message) = HeaderValue::from_str(&encode_message_header(status.message())) {
        headers.insert(names::MESSAGE, message);
    }
    if let Some(details) = details_header(status)
        && let Ok(details) = HeaderValue::from_str(&details)
    {
        headers.insert(names::STATUS_DETAILS, details);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn messages_split_across_chunks_come_out_whole() {
        let mut body = BytesMut::new();
        encode_message(&mut body, false, b"hello").expect("encode");
        encode_message(&mut body, true, b"").expect("encode");
        let mut decoder = MessageDecoder::new(1024);
        let mut out = Vec::new();
        for byte in body.chunks(1) {
            decoder.push(byte);
            while let Some(message) = decoder.next_message().expect("valid") {
                out.push(message);
            }
        }
        decoder.finish().expect("nothing left over");
        assert_eq!(
            out,
            [
                Message { compressed: false, data: Bytes::from_static(b"hello") },
                Message { compressed: true, data: Bytes::new() }
            ]
        );
    }

    #[test]
    fn oversized_truncated_and_bad_flags_are_errors() {
        let mut decoder = MessageDecoder::new(4);
        decoder.push(&[0, 0, 0, 0, 5]);
        assert_eq!(decoder.next_message(), Err(GrpcError::TooLarge { len: 5, max: 4 }));
        let mut decoder = MessageDecoder::new(4);
        decoder.push(&[7, 0, 0, 0, 1, 0]);
        assert_eq!(decoder.next_message(), Err(GrpcError::BadFlag(7)));
        let mut decoder = MessageDecoder::new(64);
        decoder.push(&[0, 0, 0, 0, 9, 1, 2]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.finish(), Err(GrpcError::Truncated { missing: 7 }));
        let mut decoder = MessageDecoder::new(64);
        decoder.push(&[0, 0]);
        assert_eq!(decoder.finish(), Err(GrpcError::Truncated { missing: 3 }));
    }

    #[test]
    fn a_huge_declared_length_reserves_one_step_not_the_declared_length() {
        let mut decoder = MessageDecoder::new(usize::MAX);
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert!(decoder.buf.capacity() <= PREFIX_LEN + RESERVE_STEP, "{}", decoder.buf.capacity());
        // A small message is still buffered in one go.
        let mut decoder = MessageDecoder::new(usize::MAX);
        decoder.push(&[0, 0, 0, 0x10, 0]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert!(decoder.buf.capacity() >= PREFIX_LEN + 0x1000);
    }

    #[test]
    fn finishing_with_a_whole_message_unread_is_not_truncation() {
        let mut decoder = MessageDecoder::new(1024);
        decoder.push(&[0, 0, 0, 0, 1, b'x', 0, 0, 0, 0, 0]);
        assert_eq!(decoder.finish(), Ok(()));
        // ...but a partial one after it is.
        let mut decoder = MessageDecoder::new(1024);
        decoder.push(&[0, 0, 0, 0, 1, b'x', 0, 0]);
        assert_eq!(decoder.finish(), Err(GrpcError::Truncated { missing: 3 }));
        let mut decoder = MessageDecoder::new(1024);
        decoder.push(&[0, 0, 0, 0, 3, b'x']);
        assert_eq!(decoder.finish(), Err(GrpcError::Truncated { missing: 2 }));
    }

    #[test]
    fn timeouts_parse_and_format() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "m", "100", "123456789m", "1x", "-1S", "1.5S", "ۄ", "1ۄ"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
        assert_eq!(format_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(format_timeout(Duration::from_secs(1)), "1000000u");
        assert_eq!(format_timeout(Duration::from_secs(3600 * 24 * 365)), "31536000S");
        for timeout in [Duration::from_nanos(1), Duration::from_millis(1234), Duration::from_secs(100_000)] {
            let parsed = parse_timeout(&format_timeout(timeout)).expect("round trip");
            assert!(parsed >= timeout && parsed - timeout < timeout / 1000 + Duration::from_nanos(1));
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        let message = "bad: 100% «wrong»\nnext";
        let encoded = encode_message_header(message);
        assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{encoded}");
        assert_eq!(decode_message_header(encoded.as_bytes()), message);
        assert_eq!(decode_message_header(b"50%zz off %4"), "50%zz off %4");
    }

    #[test]
    fn content_types_pick_codecs() {
        assert_eq!(codec_of_content_type("application/grpc"), Some(Codec::Protobuf));
        assert_eq!(codec_of_content_type("application/grpc+proto"), Some(Codec::Protobuf));
        assert_eq!(codec_of_content_type("application/grpc+json; charset=utf-8"), Some(Codec::Json));
        assert_eq!(codec_of_content_type("application/grpc+thrift"), None);
        // Dubbo-python's Triple.
        assert_eq!(codec_of_content_type("application/grpc+data"), Some(Codec::Protobuf));
        assert_eq!(codec_of_content_type("application/json"), None);
    }

    #[test]
    fn gzip_round_trips_and_bombs_are_refused() {
        let data = vec![7u8; 100_000];
        let compressed = gzip(&data);
        assert!(compressed.len() < 1000);
        assert_eq!(gunzip(&compressed, 100_000).expect("fits"), Bytes::from(data));
        assert!(matches!(gunzip(&compressed, 99_999), Err(GrpcError::TooLarge { .. })));
        assert!(matches!(gunzip(b"not gzip", 100), Err(GrpcError::Decompress(_))));
    }

    #[test]
    fn status_details_survive_the_header() {
        let status = Status::application(Code::InvalidArgument, "nope", Bytes::from_static(b"\x01\x02"));
        let header = details_header(&status).expect("has details");
        let back = status_from_parts(3, "nope".into(), Some(header.as_bytes()));
        assert!(back.is_application_error());
        assert_eq!(back.details(), &Bytes::from_static(b"\x01\x02"));
        assert!(details_header(&Status::internal("plain")).is_none());
        // A foreign google.rpc.Status is kept whole.
        let foreign = RpcStatus {
            code: 5,
            message: "x".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                value: vec![1],
            }],
        };
        let raw = prost::Message::encode_to_vec(&foreign);
        let back = status_from_parts(5, "x".into(), Some(encode_base64(&raw).as_bytes()));
        assert_eq!(back.details().as_ref(), &raw[..]);
        assert!(!back.is_application_error());
    }

    #[test]
    fn metadata_leaves_out_protocol_headers_and_round_trips() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        headers.insert("x-token", HeaderValue::from_static("abc"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        headers.insert("trace-bin", HeaderValue::from_static("AQID"));
        let metadata = metadata_of(&headers);
        assert_eq!(metadata.get("x-token"), Some("abc"));
        assert_eq!(metadata.get_all("x-multi").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(metadata.get("trace-bin"), Some("AQID"));
        assert_eq!(metadata.get("content-type"), None);
        assert_eq!(metadata.get("grpc-timeout"), None);
        let mut back = HeaderMap::new();
        put_metadata(&mut back, &metadata);
        assert_eq!(metadata_of(&back), metadata);
    }
}
