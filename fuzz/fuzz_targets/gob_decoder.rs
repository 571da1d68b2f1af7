//! Feed arbitrary bytes to the gob codec and Go's net/rpc framing; the
//! body is `fuzz/bodies/gob_decoder.rs`, which `tests/fuzz_corpus.rs`
//! replays on every test run.
//!
//! `cargo +nightly fuzz run gob_decoder`

#![no_main]

#[path = "../bodies/gob_decoder.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
