//! Metadata as HTTP headers, for every protocol that rides on HTTP (gRPC
//! over HTTP/2, and HTTP/1.1 with JSON): one mapping, one reserved set.
//!
//! A header the transport itself owns (framing, content negotiation,
//! connection management, gRPC's `grpc-*`, courier's deadline header) is
//! never metadata: it is not handed to a handler as if the caller had set
//! it, and a handler cannot emit it, which would corrupt the reply (a
//! second `content-length`, a `grpc-status` before the real one).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::metadata::Metadata;

/// The header that carries a call's deadline over HTTP/JSON, in
/// milliseconds (gRPC has its own, `grpc-timeout`).
pub const TIMEOUT_HEADER: &str = "x-courier-timeout-ms";

/// Headers that belong to the transport, not to the call.
pub fn is_reserved_header(name: &str) -> bool {
    // gRFC A6's two are call metadata, not framing: the attempt count a
    // client sends and the pushback a server answers with.
    (name.starts_with("grpc-") && !matches!(name, "grpc-previous-rpc-attempts" | "grpc-retry-pushback-ms"))
        || name.starts_with(':')
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "te"
                | "host"
                | "user-agent"
                | "accept"
                | "accept-encoding"
                | "expect"
                | "date"
                | TIMEOUT_HEADER
        )
        // Connection-specific headers, which HTTP/2 forbids (RFC 9113 §8.2.2)
        // and HTTP/1.1 gives to the connection, not the message.
        || matches!(name, "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade")
}

/// A request's metadata: every header that is not the transport's own.
/// Values of `-bin` keys stay base64, as on the wire; a value that is not
/// visible ASCII is not metadata either.
pub fn metadata_of(headers: &HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let name = name.as_str();
        if is_reserved_header(name) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            metadata.append(name, value);
        }
    }
    metadata
}

/// Add `metadata` to `headers`, skipping reserved names and what is not a
/// valid header.
pub fn put_metadata(headers: &mut HeaderMap, metadata: &Metadata) {
    for (key, value) in metadata.iter() {
        if is_reserved_header(key) {
            tracing::debug!(key, "dropping metadata with a name the transport reserves");
            continue;
        }
        match (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::debug!(key, "dropping metadata that is not a valid HTTP header"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_headers_are_not_metadata_either_way() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-length", "3"),
            ("host", "example"),
            ("grpc-timeout", "1S"),
            (TIMEOUT_HEADER, "100"),
            ("accept", "*/*"),
            ("x-trace", "abc"),
            ("lang", "en"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let metadata = metadata_of(&headers);
        let keys: Vec<&str> = metadata.iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["x-trace", "lang"]);

        let mut emitted = Metadata::new();
        emitted.insert("content-length", "999");
        emitted.insert("grpc-status", "0");
        emitted.insert("connection", "close");
        emitted.insert("x-handled-by", "courier");
        emitted.insert("bad name", "x");
        let mut out = HeaderMap::new();
        put_metadata(&mut out, &emitted);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out["x-handled-by"], "courier");
    }
}
