//! Sans-IO protocol code: pure functions from bytes to frames and back.
//!
//! Nothing here touches a socket or a clock, so every decoder can be unit
//! tested, property tested and fuzzed in isolation (see `fuzz/`). The rule
//! for every decoder: check that the input is complete and within its size
//! limit *before* allocating for it, and never panic on what a peer sent.
//!
//! - [`native`]: courier's own multiplexed binary protocol.
//! - [`grpc`]: gRPC's message framing, timeouts, status headers (feature
//!   `grpc`).
//! - [`headers`]: metadata as HTTP headers, one reserved set (features
//!   `grpc`, `http-json`).
//! - [`http`]: HTTP/JSON's statuses and error bodies (feature `http-json`).
//! - [`jsonrpc`]: JSON-RPC 1.0 as Go's `net/rpc/jsonrpc` speaks it.
//! - [`gorpc`]: Go's default `net/rpc` (gob, over TCP or HTTP `CONNECT`).
//! - [`sniff`]: which protocol a connection's first bytes speak.

pub mod gorpc;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(any(feature = "grpc", feature = "http-json"))]
pub mod headers;
#[cfg(feature = "http-json")]
pub mod http;
pub mod jsonrpc;
pub mod native;
pub mod sniff;
