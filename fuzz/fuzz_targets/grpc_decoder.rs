//! Feed arbitrary bytes to gRPC's sans-IO decoders: the message splitter
//! (in chunks, with a small limit), decompression of whatever comes out,
//! and the header parsers (timeout, message, status details, content type).
//! Any panic is a bug: these see whatever a peer sends.
//!
//! `cargo +nightly fuzz run grpc_decoder`

#![no_main]

#[path = "../bodies/grpc_decoder.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
