//! Go's default `net/rpc` wire, sans-IO: gob over a plain connection
//! (`rpc.Dial` / `rpc.ServeConn`), or the same after an HTTP `CONNECT`
//! (`rpc.DialHTTP` / `rpc.HandleHTTP`).
//!
//! A connection is one gob stream each way (see [`crate::codec::gob`]):
//! the client sends, per call, a [`RequestHeader`] value and then the
//! argument value; the server answers with a [`ResponseHeader`] and then
//! the reply value, matched by sequence number, in any order. A failed call
//! carries its error as a string in the header, and an empty struct as its
//! body (Go's client reads and discards it). Over HTTP, the client first
//! sends `CONNECT /_goRPC_ HTTP/1.0` and a blank line, and the server
//! answers `HTTP/1.0 200 Connected to Go RPC` and a blank line before the
//! gob streams start.

use serde::{Deserialize, Serialize};

/// The path Go's `rpc.HandleHTTP` serves and `rpc.DialHTTP` asks for.
pub const HTTP_PATH: &str = "/_goRPC_";

/// How a Go client's HTTP handshake starts (the request line, up to the
/// protocol version).
pub const CONNECT_PREFIX: &[u8] = b"CONNECT /_goRPC_ ";

/// What Go's client sends to open an HTTP connection.
pub const CONNECT_REQUEST: &[u8] = b"CONNECT /_goRPC_ HTTP/1.0\n\n";

/// What Go's server answers a `CONNECT`, word for word: Go's client
/// compares the status line's text exactly.
pub const CONNECTED: &[u8] = b"HTTP/1.0 200 Connected to Go RPC\n\n";

/// The status Go's client insists on.
const CONNECTED_STATUS: &[u8] = b"200 Connected to Go RPC";

/// The longest HTTP handshake (request or response, headers included)
/// read before giving up on it.
pub const MAX_HANDSHAKE: usize = 8 * 1024;

/// The header of a request (Go's `rpc.Request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// `Service.Method`.
    #[serde(rename = "ServiceMethod")]
    pub service_method: String,
    /// The client's sequence number for the call.
    #[serde(rename = "Seq")]
    pub seq: u64,
}

/// The header of a response (Go's `rpc.Response`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    /// Echoes the request's.
    #[serde(rename = "ServiceMethod")]
    pub service_method: String,
    /// Echoes the request's.
    #[serde(rename = "Seq")]
    pub seq: u64,
    /// The error, if the call failed; empty if it succeeded.
    #[serde(rename = "Error")]
    pub error: String,
}

/// The body of a failed call's response: Go's server sends an empty struct
/// (`invalidRequest`), which its client discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// What the first bytes of a connection say about gob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GobStart {
    /// A gob stream's first message: a type definition.
    Yes,
    /// Not a gob stream.
    No,
    /// Too few bytes to tell.
    NeedMore,
}

/// Whether `bytes` start a gob stream as Go's `net/rpc` client starts one:
/// a message length, then a negative type id (a type definition: the
/// client's first message defines `rpc.Request`), then the first field of
/// gob's `wireType` (field numbers 1 to 7: array, slice, struct, map and
/// the three marshaler kinds), whose own first field is its `CommonType`
/// (field 1), which starts with its name or, unnamed, its id (field 1 or
/// 2). JSON-RPC (`{` then `"`) and every other protocol courier serves
/// fail this by the second byte; a TLS hello by the fifth.
pub fn gob_start(bytes: &[u8]) -> GobStart {
    let mut at = 0;
    // The message length: one byte below 0x80, or a byte count (0xFF is
    // one byte, 0xFE two, ...) and that many bytes, big-endian.
    let Some(&first) = bytes.first() else { return GobStart::NeedMore };
    let length = match first {
        0 => return GobStart::No,
        1..=0x7f => {
            at += 1;
            u64::from(first)
        }
        0xf8..=0xff => {
            let width = usize::from(!first) + 1;
            let Some(digits) = bytes.get(1..1 + width) else { return GobStart::NeedMore };
            at += 1 + width;
            digits.iter().fold(0u64, |n, &digit| (n << 8) | u64::from(digit))
        }
        _ => return GobStart::No,
    };
    // A type definition is a few bytes at least.
    if length < 3 {
        return GobStart::No;
    }
    // The type id: a gob int, whose lowest bit is its sign.
    let Some(&id) = bytes.get(at) else { return GobStart::NeedMore };
    let id_bit = match id {
        0..=0x7f => id,
        0xf8..=0xff => {
            let width = usize::from(!id) + 1;
            let Some(digits) = bytes.get(at + 1..at + 1 + width) else { return GobStart::NeedMore };
            at += width;
            digits.last().copied().unwrap_or(0)
        }
        _ => return GobStart::No,
    };
    at += 1;
    if id_bit & 1 == 0 {
        // A value first (or a positive id): not how a net/rpc client opens.
        return GobStart::No;
    }
    let expected: [&[u8]; 3] = [&[1, 2, 3, 4, 5, 6, 7], &[1], &[1, 2]];
    for (offset, allowed) in expected.iter().enumerate() {
        match bytes.get(at + offset) {
            None => return GobStart::NeedMore,
            Some(byte) if allowed.contains(byte) => {}
            Some(_) => return GobStart::No,
        }
    }
    GobStart::Yes
}

/// Why an HTTP handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No blank line within [`MAX_HANDSHAKE`] bytes.
    #[error("the HTTP handshake exceeds {MAX_HANDSHAKE} bytes")]
    TooLong,
    /// The server answered something other than Go's `200 Connected to Go RPC`.
    #[error(
        "unexpected HTTP response {0:?} (a Go net/rpc server over HTTP answers \"200 Connected to Go RPC\")"
    )]
    Refused(String),
}

/// Where the header of an HTTP message in `bytes` ends (the index after
/// its blank line), accepting `\n\n` as Go writes and `\r\n\r\n` as other
/// clients do; `Ok(None)` if it has not ended yet.
pub fn header_end(bytes: &[u8]) -> Result<Option<usize>, HandshakeError> {
    let mut line_start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if at >= MAX_HANDSHAKE {
            return Err(HandshakeError::TooLong);
        }
        if byte == b'\n' {
            let line = &bytes[line_start..at];
            if line.is_empty() || line == b"\r" {
                return Ok(Some(at + 1));
            }
            line_start = at + 1;
        }
    }
    if bytes.len() >= MAX_HANDSHAKE {
        return Err(HandshakeError::TooLong);
    }
    Ok(None)
}

/// Check a server's answer to `CONNECT` (its whole header, as
/// [`header_end`] found it).
pub fn check_connected(header: &[u8]) -> Result<(), HandshakeError> {
    let status_line = header.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = status_line.strip_suffix(b"\r").unwrap_or(status_line);
    // `HTTP/1.x <status>`: Go's client compares the status text exactly.
    let status = status_line.splitn(2, |&b| b == b' ').nth(1).unwrap_or_default();
    if status_line.starts_with(b"HTTP/1.") && status == CONNECTED_STATUS {
        Ok(())
    } else {
        Err(HandshakeError::Refused(
            String::from_utf8_lossy(&status_line[..status_line.len().min(200)]).into_owned(),
        ))
    }
}

/// The error text Go's server gives for a method it cannot find
/// (`rpc: can't find service X.Y` / `rpc: can't find method X.Y`), with
/// courier's explanation after it.
pub fn not_found_text(service_method: &str, service_known: bool, detail: &str) -> String {
    // The name is a peer's: keep what it can make us send small.
    const MAX: usize = 128;
    let cut;
    let service_method = match service_method.char_indices().nth(MAX) {
        None => service_method,
        Some((at, _)) => {
            cut = format!("{}...", &service_method[..at]);
            &cut
        }
    };
    let what = if service_known { "method" } else { "service" };
    if service_method.contains('.') {
        format!("rpc: can't find {what} {service_method} ({detail})")
    } else {
        format!("rpc: service/method request ill-formed: {service_method} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_clients_first_bytes_are_gob() {
        // The start of what Go 1.19's rpc.Dial client sends first: the
        // definition of rpc.Request (length 0x2f, id -65, wireType field 3).
        let go = [0x2f, 0xff, 0x81, 0x03, 0x01, 0x01, 0x07];
        assert_eq!(gob_start(&go), GobStart::Yes);
        for short in 0..6 {
            assert_eq!(gob_start(&go[..short]), GobStart::NeedMore, "{short} bytes");
        }
        // A small id fits one byte: -1 is 0x01.
        assert_eq!(gob_start(&[0x05, 0x01, 0x03, 0x01, 0x02]), GobStart::Yes);
        // Long messages have a byte count first.
        assert_eq!(gob_start(&[0xfe, 0x01, 0x00, 0xff, 0x81, 0x03, 0x01, 0x01]), GobStart::Yes);
    }

    #[test]
    fn other_protocols_are_not_gob() {
        for other in [
            &br#"{"method":"A.B","params":[{}],"id":0}"#[..],
            b"POST / HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n",
            b"\xc7courier",
            b"\x00\x01\x02",
            b"\x05\x02\x03",                         // a positive id: a value, not a definition
            b"\x05\x01\x09\x01\x01",                 // no such wireType field
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", // TLS
            b"\x16\x03\x01\x01\xfc\x01\x00\x01\xf8", // TLS
        ] {
            assert_eq!(gob_start(other), GobStart::No, "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn the_http_handshake_ends_at_a_blank_line_either_way() {
        assert_eq!(header_end(CONNECT_REQUEST), Ok(Some(CONNECT_REQUEST.len())));
        assert_eq!(header_end(b"CONNECT /_goRPC_ HTTP/1.1\r\nHost: x\r\n\r\ngob"), Ok(Some(38)));
        assert_eq!(header_end(b"CONNECT /_goRPC_ HTTP/1.0\n"), Ok(None));
        assert_eq!(header_end(&[b'a'; MAX_HANDSHAKE]), Err(HandshakeError::TooLong));
    }

    #[test]
    fn only_gos_exact_answer_is_connected() {
        assert_eq!(check_connected(CONNECTED), Ok(()));
        assert_eq!(check_connected(b"HTTP/1.1 200 Connected to Go RPC\r\n\r\n"), Ok(()));
        assert!(
            matches!(check_connected(b"HTTP/1.1 200 OK\r\n\r\n"), Err(HandshakeError::Refused(s)) if s == "HTTP/1.1 200 OK")
        );
        assert!(check_connected(b"HTTP/1.0 404 Not Found\n\n").is_err());
        assert!(check_connected(b"").is_err());
    }

    #[test]
    fn unknown_targets_read_as_gos_errors() {
        assert_eq!(not_found_text("A.B", true, "x"), "rpc: can't find method A.B (x)");
        assert_eq!(not_found_text("A.B", false, "x"), "rpc: can't find service A.B (x)");
        assert_eq!(not_found_text("AB", false, "x"), "rpc: service/method request ill-formed: AB (x)");
        let long = format!("A.{}", "b".repeat(1000));
        assert!(not_found_text(&long, true, "x").len() < 200, "a peer's long name is cut");
    }
}
