//! The body of the `native_decoder` fuzz target, shared with the workspace test
//! `tests/fuzz_corpus.rs`, which replays the committed corpus
//! (`fuzz/corpus/native_decoder/`) and any crashes found (`fuzz/artifacts/native_decoder/`)
//! through it on every test run. Included by `#[path]` from both, so it
//! depends on nothing but courier, bytes, serde and serde_json.
//!
//! Feed arbitrary bytes to the native protocol's decoders: the preface
//! check, the frame splitter (with a small limit, so the size check is
//! exercised), and every metadata decoder on every frame that comes out.
//! Any panic is a bug: these functions see whatever a peer sends.
//!
//! `cargo +nightly fuzz run native_decoder`

use bytes::BytesMut;
use courier::protocol::native::{
    FrameDecoder, GoAway, RequestHead, ResponseHead, check_preface, decode_window_update,
};

/// Feed `data` to the decoders; any panic is a bug.
pub fn run(data: &[u8]) {
    let _ = check_preface(data);
    let decoder = FrameDecoder::new(64 * 1024);
    // Feed the input in two pieces, as a socket might deliver it.
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut buf = BytesMut::from(&data[..split]);
    let mut fed_rest = false;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                if let Ok(head) = RequestHead::decode(&frame.meta) {
                    let _ = head.headers.count();
                }
                if let Ok(head) = ResponseHead::decode(&frame.meta) {
                    let _ = head.headers.count();
                }
                let _ = GoAway::decode(&frame.meta);
                let _ = decode_window_update(&frame.body);
            }
            Ok(None) if !fed_rest => {
                buf.extend_from_slice(&data[split..]);
                fed_rest = true;
            }
            Ok(None) | Err(_) => break,
        }
    }
}
