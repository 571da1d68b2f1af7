//! Streams: server-streaming, client-streaming and bidirectional calls.
//!
//! - `credit`: per-stream flow control, sans-IO.

pub mod credit;
