//! The body of the `json_protocols` fuzz target, shared with the workspace test
//! `tests/fuzz_corpus.rs`, which replays the committed corpus
//! (`fuzz/corpus/json_protocols/`) and any crashes found (`fuzz/artifacts/json_protocols/`)
//! through it on every test run. Included by `#[path]` from both, so it
//! depends on nothing but courier, bytes, serde and serde_json.
//!
//! Feed arbitrary bytes to what reads JSON-RPC and sniffs protocols: the
//! protocol sniffer, the request splitter (in chunks, with a small limit),
//! the request (and, for the client, reply) parser on every object it finds, and the lenient (Go-style)
//! JSON decoder. Any panic is a bug: these see whatever a peer sends.
//!
//! `cargo +nightly fuzz run json_protocols`

use std::collections::HashMap;

use courier::codec::lenient;
use courier::protocol::jsonrpc::{Splitter, parse_request, parse_response};
use courier::protocol::sniff::sniff;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Args {
    a: i64,
    name: Option<String>,
    list: Vec<HashMap<String, f64>>,
}

/// Feed `data` to the decoders; any panic is a bug.
pub fn run(data: &[u8]) {
    let _ = sniff(data);
    let mut splitter = Splitter::default();
    let mut buf = Vec::new();
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    'chunks: for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match splitter.next_object(&buf, 4096) {
                Ok(Some((start, end))) => {
                    let _ = parse_request(&buf[start..end]);
                    // The client's side: Go servers' replies.
                    let _ = parse_response(&buf[start..end]);
                    buf.drain(..end);
                    splitter.consumed(end);
                }
                Ok(None) => break,
                Err(_) => break 'chunks,
            }
        }
    }
    let _ = lenient::from_slice::<Args>(data);
    let _ = lenient::from_slice::<serde_json::Value>(data);
}
