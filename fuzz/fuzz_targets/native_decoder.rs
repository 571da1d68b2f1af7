//! Feed arbitrary bytes to the native protocol's decoders: the preface
//! check, the frame splitter (with a small limit, so the size check is
//! exercised), and every metadata decoder on every frame that comes out.
//! Any panic is a bug: these functions see whatever a peer sends.
//!
//! `cargo +nightly fuzz run native_decoder`

#![no_main]

#[path = "../bodies/native_decoder.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
