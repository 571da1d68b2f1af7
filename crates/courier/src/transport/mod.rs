//! Moving frames over a byte stream: the part of a connection that is the
//! same for clients and servers.
//!
//! - [`write_queue`]: callers append encoded frames to one shared buffer; a
//!   writer task flushes everything queued with one write. This write
//!   coalescing is what makes many small calls cheap.
//! - [`reader`]: reads into a buffer and splits frames off it, zero-copy.
//! - [`keepalive`]: the sans-IO ping/timeout state machine.
//! - [`progress`]: the sans-IO progress of a partly received request (it
//!   must keep arriving); `watched` (feature `http-json`) feeds it from a
//!   stream whose parser is not ours.
//! - [`tcp`]: socket options and lingering close.
//! - [`rewind`]: hand the bytes read while sniffing back to the protocol
//!   that gets the connection.
//! - `h2_send` (feature `grpc`): write to an HTTP/2 stream within the
//!   peer's flow-control window instead of buffering without bound; the
//!   `StreamWire` of gRPC streams (messages framed on the application's
//!   task, sent as h2 capacity allows, credit given back only then; reads
//!   released to h2 only as the application consumes), and the widening
//!   of a connection's receive window by one stream window per open
//!   stream, so stalled streams cannot starve the rest of the connection.

#[cfg(feature = "grpc")]
pub(crate) mod h2_send;
pub(crate) mod keepalive;
pub(crate) mod progress;
pub(crate) mod reader;
#[cfg(any(feature = "grpc", feature = "http-json"))]
pub(crate) mod rewind;
pub(crate) mod tcp;
#[cfg(feature = "http-json")]
pub(crate) mod watched;
pub(crate) mod write_queue;
