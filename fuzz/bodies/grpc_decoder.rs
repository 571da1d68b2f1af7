//! The body of the `grpc_decoder` fuzz target, shared with the workspace test
//! `tests/fuzz_corpus.rs`, which replays the committed corpus
//! (`fuzz/corpus/grpc_decoder/`) and any crashes found (`fuzz/artifacts/grpc_decoder/`)
//! through it on every test run. Included by `#[path]` from both, so it
//! depends on nothing but courier, bytes, serde and serde_json.
//!
//! Feed arbitrary bytes to gRPC's sans-IO decoders: the message splitter
//! (in chunks, with a small limit), decompression of whatever comes out,
//! and the header parsers (timeout, message, status details, content type).
//! Any panic is a bug: these see whatever a peer sends.
//!
//! `cargo +nightly fuzz run grpc_decoder`

use courier::protocol::grpc::{
    Encoding, MessageDecoder, codec_of_content_type, decode_message_header, decompress, parse_timeout,
    status_from_parts,
};

/// Feed `data` to the decoders; any panic is a bug.
pub fn run(data: &[u8]) {
    let mut decoder = MessageDecoder::new(64 * 1024);
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    'chunks: for piece in data.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let _ = decompress(message, Encoding::Gzip, 64 * 1024);
                }
                Ok(None) => break,
                Err(_) => break 'chunks,
            }
        }
    }
    let _ = decoder.finish();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_timeout(text);
        let _ = codec_of_content_type(text);
    }
    let _ = decode_message_header(data);
    let _ = status_from_parts(u32::from(data.first().copied().unwrap_or(0)), String::new(), Some(data));
}
