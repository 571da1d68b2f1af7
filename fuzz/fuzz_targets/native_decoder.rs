//! Feed arbitrary bytes to the native protocol's decoders: the preface
//! check, the frame splitter (with a small limit, so the size check is
//! exercised), and every metadata decoder on every frame that comes out.
//! Any panic is a bug: these functions see whatever a peer sends.
//!
//! `cargo +nightly fuzz run native_decoder`

#![no_main]

use bytes::BytesMut;
use courier::protocol::native::{FrameDecoder, GoAway, RequestHead, ResponseHead, check_preface};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
            }
            Ok(None) if !fed_rest => {
                buf.extend_from_slice(&data[split..]);
                fed_rest = true;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
