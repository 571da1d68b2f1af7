//! Feed arbitrary bytes to what reads JSON-RPC and sniffs protocols: the
//! protocol sniffer, the request splitter (in chunks, with a small limit),
//! the request parser on every object it finds, and the lenient (Go-style)
//! JSON decoder. Any panic is a bug: these see whatever a peer sends.
//!
//! `cargo +nightly fuzz run json_protocols`

#![no_main]

#[path = "../bodies/json_protocols.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
