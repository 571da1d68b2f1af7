//! Go's default `net/rpc` connections: gob over TCP (`rpc.Dial`), or the
//! same after an HTTP `CONNECT /_goRPC_` (`rpc.DialHTTP`). The adapter that
//! cuts requests out of the gob stream (see [`crate::protocol::gorpc`] and
//! [`crate::codec::gob`]) for the stream-connection runner
//! ([`super::stream_rpc`]), which reads, runs and answers them.
//!
//! Each request is two gob values, a header (`ServiceMethod`, `Seq`) and
//! the argument; the argument goes to the method as a self-contained gob
//! message in [`Codec::Gob`], so the method's own types decode it (Go's
//! field names matched to Rust's as the codec describes). Replies go out as
//! they finish, matched by `Seq`, through one gob encoder per connection,
//! which sends each type's definition once. A failed call answers its
//! error as the header's `Error` string (what Go's client returns as an
//! `rpc.ServerError`) and an empty struct as its body, as Go's server
//! does; an unknown service or method is named in Go's words
//! (`rpc: can't find method ServiceA.Foo`) with what the server offers.
//! A stream that cannot be decoded is closed without a word, as Go's
//! server closes it: nothing in it says which call to fail.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::ServerShared;
use super::router::Route;
use super::stream_rpc::{self, Next, Parsed, Reply, ReplyWriter, StreamProtocol};
use crate::codec::Codec;
use crate::codec::gob::{Limits, StreamDecoder, StreamEncoder};
use crate::protocol::gorpc::{
    CONNECT_PREFIX, CONNECTED, Empty, RequestHeader, ResponseHeader, header_end, not_found_text,
};
use crate::protocol::jsonrpc::error_text;
use crate::protocol::sniff::Protocol;
use crate::status::{Code, Status};

/// Serve one net/rpc connection, answering the HTTP handshake first if it
/// starts with one.
pub(crate) async fn serve(
    mut stream: TcpStream,
    mut sniffed: BytesMut,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    shutdown: watch::Receiver<bool>,
) {
    if sniffed.starts_with(CONNECT_PREFIX) {
        let handshake = tokio::time::timeout(server.config.handshake_timeout, async {
            let end = loop {
                if let Some(end) = header_end(&sniffed).map_err(|err| err.to_string())? {
                    break end;
                }
                if stream.read_buf(&mut sniffed).await.map_err(|err| err.to_string())? == 0 {
                    return Err("the connection closed during the HTTP handshake".to_owned());
                }
            };
            // What follows the blank line is the gob stream already.
            let _ = sniffed.split_to(end);
            stream.write_all(CONNECTED).await.map_err(|err| err.to_string())
        });
        match handshake.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "closing Go net/rpc connection: the HTTP handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "closing Go net/rpc connection: the HTTP handshake did not finish in time");
                return;
            }
        }
    }
    let limits = Limits { max_message: server.config.max_frame_size, ..Limits::default() };
    let protocol = GoRpc { decoder: StreamDecoder::new(limits), header: None };
    stream_rpc::serve(protocol, stream, sniffed, peer, server, shutdown).await;
}

/// The reading side of one connection: the peer's type definitions, and
/// the header of a request whose argument has not arrived yet.
struct GoRpc {
    decoder: StreamDecoder,
    header: Option<RequestHeader>,
}

/// What a reply echoes: the request's `Seq` and `ServiceMethod`.
type Tag = (u64, String);

impl StreamProtocol for GoRpc {
    type Tag = Tag;
    /// The argument, as a self-contained gob message.
    type Args = Bytes;
    type Writer = Replies;

    const PROTOCOL: Protocol = Protocol::GoRpc;
    const CODEC: Codec = Codec::Gob;

    fn next_request(&mut self, buf: &mut BytesMut, _max_frame: usize) -> Next<Self> {
        // The decoder was made with the frame limit: no gob message over it
        // is buffered.
        loop {
            let Some(value) = self.decoder.next_value(buf).map_err(|err| format!("gob: {err}"))? else {
                return Ok(None);
            };
            match self.header.take() {
                None => {
                    let header: RequestHeader = Codec::Gob
                        .decode(&value)
                        .map_err(|err| format!("rpc: server cannot decode request header: {err}"))?;
                    self.header = Some(header);
                }
                Some(RequestHeader { service_method, seq }) => {
                    return Ok(Some(Parsed::Call {
                        method: service_method.clone(),
                        args: value,
                        tag: (seq, service_method),
                    }));
                }
            }
        }
    }

    fn in_request(&self, buf: &[u8]) -> bool {
        self.header.is_some() || !buf.is_empty()
    }

    fn arguments(_route: &Route, args: Bytes) -> Result<Bytes, Status> {
        Ok(args)
    }

    fn routing_error(server: &ServerShared, method: &str, status: Status) -> Status {
        if status.code() != Code::Unimplemented {
            return status;
        }
        // Go's words first (clients match them), then what is offered.
        let services = server.router.services();
        let service = method.rsplit_once('.').and_then(|(name, _)| {
            services.iter().map(|known| known.descriptor()).find(|descriptor| descriptor.name == name)
        });
        let offered = match service {
            Some(descriptor) => {
                let methods: Vec<&str> = descriptor.methods.iter().map(|m| m.name).collect();
                format!("{} offers: {}", descriptor.name, methods.join(", "))
            }
            None => {
                let names: Vec<&str> = services.iter().map(|known| known.descriptor().name).collect();
                format!("this server offers: {}", names.join(", "))
            }
        };
        Status::unimplemented(not_found_text(method, service.is_some(), &offered))
    }

    fn writer(&self) -> Replies {
        Replies { encoder: StreamEncoder::new(), empty: None }
    }
}

/// The writing side: one gob stream of headers and bodies.
struct Replies {
    encoder: StreamEncoder,
    /// The body of a failed call, encoded once.
    empty: Option<Bytes>,
}

impl Replies {
    fn encode(value: &impl serde::Serialize) -> Result<Bytes, String> {
        let mut out = BytesMut::new();
        Codec::Gob.encode(value, &mut out).map_err(|err| err.to_string())?;
        Ok(out.freeze())
    }
}

impl ReplyWriter for Replies {
    type Tag = Tag;

    fn write(&mut self, reply: Reply<Tag>, out: &mut BytesMut) -> Result<(), String> {
        let Reply::Answer { tag: (seq, service_method), result, .. } = reply else {
            // A broken stream: Go's server closes it without a reply, as
            // nothing says which call it was.
            return Ok(());
        };
        let (error, body) = match result {
            Ok(body) => (String::new(), body),
            Err(status) => {
                let empty = match &self.empty {
                    Some(empty) => empty.clone(),
                    None => self.empty.insert(Replies::encode(&Empty {})?).clone(),
                };
                (error_text(&status).to_owned(), empty)
            }
        };
        let header = Replies::encode(&ResponseHeader { service_method, seq, error })?;
        self.encoder.write_value(&header, out).map_err(|err| err.to_string())?;
        self.encoder.write_value(&body, out).map_err(|err| err.to_string())
    }
}
