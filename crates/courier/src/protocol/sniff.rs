//! Which protocol a connection speaks, from its first bytes.
//!
//! Every protocol courier serves announces itself in its first bytes: the
//! native preface starts with `0xC7` (not valid ASCII, so nothing else
//! starts that way); gRPC clients open HTTP/2 with the fixed preface
//! `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`; HTTP/1 requests start with a method
//! and a space; Go's `net/rpc` clients open with `CONNECT /_goRPC_ ` over
//! HTTP, or with a gob type definition (see [`super::gorpc::gob_start`]);
//! JSON-RPC requests are JSON objects, so `{` (after optional whitespace).
//! The servers for each check the rest.

use super::gorpc::{CONNECT_PREFIX, GobStart, gob_start};
use super::native::PREFACE;

/// A protocol a connection can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// courier's own binary protocol.
    Native,
    /// gRPC over HTTP/2 (prior knowledge, as gRPC clients connect).
    Grpc,
    /// JSON-RPC 1.0 over raw TCP, as Go's `net/rpc/jsonrpc`.
    JsonRpc,
    /// HTTP/1.1 with JSON bodies.
    HttpJson,
    /// Go's `net/rpc` with gob, over TCP or after an HTTP `CONNECT`.
    GoRpc,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 5] =
        [Protocol::Native, Protocol::Grpc, Protocol::JsonRpc, Protocol::HttpJson, Protocol::GoRpc];

    /// The name people know it by, for messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Protocol::Native => "courier's native protocol",
            Protocol::Grpc => "gRPC",
            Protocol::JsonRpc => "JSON-RPC",
            Protocol::HttpJson => "HTTP/JSON",
            Protocol::GoRpc => "Go's net/rpc",
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Grpc => "grpc",
            Protocol::JsonRpc => "jsonrpc",
            Protocol::HttpJson => "http",
            Protocol::GoRpc => "gorpc",
        }
    }
}

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// This protocol.
    Is(Protocol),
    /// Not decided yet: read more.
    NeedMore,
    /// None of ours.
    Unknown,
}

/// The HTTP/2 connection preface.
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/1 request lines start with one of these.
const HTTP1_METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

/// Leading whitespace allowed before a JSON-RPC request.
const MAX_LEADING_WHITESPACE: usize = 64;

/// Classify a connection by the bytes read from it so far.
pub fn sniff(bytes: &[u8]) -> Sniffed {
    let Some(&first) = bytes.first() else { return Sniffed::NeedMore };
    if first == PREFACE[0] {
        return Sniffed::Is(Protocol::Native);
    }
    let mut undecided = false;
    // Before the HTTP methods: `CONNECT /_goRPC_ ` is Go's, any other
    // `CONNECT` is HTTP's.
    if bytes.starts_with(CONNECT_PREFIX) {
        return Sniffed::Is(Protocol::GoRpc);
    }
    if CONNECT_PREFIX.starts_with(bytes) {
        return Sniffed::NeedMore;
    }
    for (candidate, protocol) in std::iter::once((HTTP2_PREFACE, Protocol::Grpc))
        .chain(HTTP1_METHODS.iter().map(|m| (*m, Protocol::HttpJson)))
    {
        if bytes.starts_with(candidate) {
            return Sniffed::Is(protocol);
        }
        if candidate.starts_with(bytes) {
            undecided = true;
        }
    }
    if undecided {
        return Sniffed::NeedMore;
    }
    // A JSON object at once: JSON-RPC, even before the rest arrives (a gob
    // stream never starts so: a Go client's first message, the definition
    // of rpc.Request, is 0x2f bytes long).
    if first == b'{' {
        return Sniffed::Is(Protocol::JsonRpc);
    }
    match gob_start(bytes) {
        GobStart::Yes => return Sniffed::Is(Protocol::GoRpc),
        GobStart::NeedMore => return Sniffed::NeedMore,
        GobStart::No => {}
    }
    match bytes.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(at) if bytes[at] == b'{' => Sniffed::Is(Protocol::JsonRpc),
        Some(_) => Sniffed::Unknown,
        None if bytes.len() <= MAX_LEADING_WHITESPACE => Sniffed::NeedMore,
        None => Sniffed::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_is_recognised() {
        assert_eq!(sniff(&PREFACE), Sniffed::Is(Protocol::Native));
        assert_eq!(sniff(&PREFACE[..1]), Sniffed::Is(Protocol::Native));
        assert_eq!(sniff(HTTP2_PREFACE), Sniffed::Is(Protocol::Grpc));
        assert_eq!(sniff(b"POST /Calculator/Add HTTP/1.1\r\n"), Sniffed::Is(Protocol::HttpJson));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Is(Protocol::HttpJson));
        assert_eq!(sniff(br#"{"method":"Calculator.Add"}"#), Sniffed::Is(Protocol::JsonRpc));
        assert_eq!(sniff(b"\r\n  {"), Sniffed::Is(Protocol::JsonRpc));
        assert_eq!(sniff(b"{"), Sniffed::Is(Protocol::JsonRpc), "a lone brace is JSON-RPC at once");
        assert_eq!(sniff(b"CONNECT /_goRPC_ HTTP/1.0\n\n"), Sniffed::Is(Protocol::GoRpc));
        assert_eq!(sniff(b"CONNECT example.com:443 HTTP/1.1\r\n"), Sniffed::Is(Protocol::HttpJson));
        // What Go's rpc.Dial client sends first.
        assert_eq!(sniff(b"\x2f\xff\x81\x03\x01\x01\x07Request"), Sniffed::Is(Protocol::GoRpc));
    }

    #[test]
    fn prefixes_wait_for_more() {
        for partial in [
            &b""[..],
            b"P",
            b"PR",
            b"PRI * HTTP/2",
            b"PO",
            b"G",
            b"  ",
            b"DELE",
            b"CONNECT /_go",
            b"\x2f\xff",
        ] {
            assert_eq!(sniff(partial), Sniffed::NeedMore, "{:?}", String::from_utf8_lossy(partial));
        }
    }

    #[test]
    fn anything_else_is_unknown() {
        for other in [
            &b"SSH-2.0-OpenSSH"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
            b"PING",
            b"[1,2]",
            b"GETX",
            &[b' '; 65],
        ] {
            assert_eq!(sniff(other), Sniffed::Unknown, "{:?}", String::from_utf8_lossy(other));
        }
    }
}
