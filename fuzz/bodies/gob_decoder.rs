//! The body of the `gob_decoder` fuzz target, shared with the workspace
//! test `tests/fuzz_corpus.rs`, which replays the committed corpus
//! (`fuzz/corpus/gob_decoder/`) and any crashes found
//! (`fuzz/artifacts/gob_decoder/`) through it on every test run. Included
//! by `#[path]` from both, so it depends on nothing but courier, bytes,
//! serde and serde_json.
//!
//! Feed arbitrary bytes to the gob codec's sans-IO decoders: a
//! `StreamDecoder` with small limits (in chunks), and every self-contained
//! message it yields decoded into `serde_json::Value` (the
//! `deserialize_any` path), into a typed struct (every other hint, the
//! zero filling of missing fields, enums) and re-sent through a
//! `StreamEncoder`; the whole input is also decoded as one message; and
//! Go's net/rpc framing around gob (sniffing, the `CONNECT` handshake,
//! request and response headers). Any panic is a bug, and with these
//! limits every run stays small: these see whatever a Go peer sends.
//!
//! The seeds in `fuzz/corpus/gob_decoder/` are streams Go's encoding/gob
//! wrote (`COURIER_WRITE_CORPUS=1 cargo test -p courier-tests --test
//! gob_codec` writes them again).

use std::collections::BTreeMap;

use bytes::BytesMut;
use courier::Codec;
use courier::codec::gob::{
    Complex, Limits, StreamDecoder, StreamEncoder, from_message_with_limits, to_message,
};
use courier::protocol::gorpc::{RequestHeader, ResponseHeader, check_connected, gob_start, header_end};
use serde::Deserialize;

/// A bit of every shape serde can ask for.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Typed {
    a: i64,
    b: u8,
    c: String,
    d: Vec<u8>,
    e: Option<Box<Typed>>,
    f: Vec<Typed>,
    g: BTreeMap<String, i64>,
    h: (i32, i32),
    i: f32,
    j: char,
    k: Shape,
    l: bool,
    m: Complex,
    n: (),
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum Shape {
    Unit,
    New(i64),
    Pair(i8, i8),
    Named { x: u16 },
}

const LIMITS: Limits = Limits { max_message: 64 << 10, max_types: 64, max_depth: 16 };

/// Feed `data` to the decoders; any panic is a bug.
pub fn run(data: &[u8]) {
    let mut decoder = StreamDecoder::new(LIMITS);
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut buf = BytesMut::new();
    let mut encoder = StreamEncoder::new();
    let mut resent = BytesMut::new();
    'chunks: for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.next_value(&mut buf) {
                Ok(Some(message)) => {
                    if let Ok(value) = from_message_with_limits::<serde_json::Value>(&message, LIMITS) {
                        // What decoded encodes (or explains why not).
                        let _ = to_message(&value);
                    }
                    let _ = from_message_with_limits::<Typed>(&message, LIMITS);
                    let _ = from_message_with_limits::<Vec<Shape>>(&message, LIMITS);
                    let _ = encoder.write_value(&message, &mut resent);
                    resent.clear();
                }
                Ok(None) => break,
                Err(_) => break 'chunks,
            }
        }
    }
    let _ = from_message_with_limits::<serde_json::Value>(data, LIMITS);
    go_rpc(data);
}

/// What reads Go's net/rpc around the gob values: the sniffer's look at a
/// stream's first bytes, the HTTP handshake (both sides), and the request
/// and response headers as the server and client adapters decode them.
fn go_rpc(data: &[u8]) {
    let _ = gob_start(data);
    if let Ok(Some(end)) = header_end(data) {
        let _ = check_connected(&data[..end]);
    }
    let mut decoder = StreamDecoder::new(LIMITS);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(value)) = decoder.next_value(&mut buf) {
        let _ = Codec::Gob.decode::<RequestHeader>(&value);
        let _ = Codec::Gob.decode::<ResponseHeader>(&value);
    }
}
