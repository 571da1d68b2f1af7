//! The first moments of a connection: read until its first bytes say which
//! protocol it speaks (see [`crate::protocol::sniff`]), then hand it, with
//! those bytes, to that protocol's server. A connection that says nothing
//! recognisable within the handshake timeout is closed, so a silent or
//! foreign client cannot hold a slot.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::ServerShared;
use crate::protocol::sniff::{Protocol, Sniffed, sniff};
use crate::transport::tcp;

/// The protocols a server answers; all by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Protocols(u8);

impl Default for Protocols {
    fn default() -> Protocols {
        Protocols::of(Protocol::ALL)
    }
}

impl Protocols {
    fn bit(protocol: Protocol) -> u8 {
        match protocol {
            Protocol::Native => 1,
            Protocol::Grpc => 2,
            Protocol::JsonRpc => 4,
            Protocol::HttpJson => 8,
            Protocol::GoRpc => 16,
        }
    }

    pub(crate) fn of(protocols: impl IntoIterator<Item = Protocol>) -> Protocols {
        Protocols(protocols.into_iter().fold(0, |bits, p| bits | Protocols::bit(p)))
    }

    pub(crate) fn without(self, protocol: Protocol) -> Protocols {
        Protocols(self.0 & !Protocols::bit(protocol))
    }

    pub(crate) fn contains(self, protocol: Protocol) -> bool {
        self.0 & Protocols::bit(protocol) != 0
    }
}

/// Serve one accepted connection in whatever protocol it speaks.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    server: Arc<ServerShared>,
    shutdown: watch::Receiver<bool>,
) {
    tcp::configure(&stream);
    let mut sniffed = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            match sniff(&sniffed) {
                Sniffed::Is(protocol) => return Some(protocol),
                Sniffed::Unknown => return None,
                Sniffed::NeedMore => {}
            }
            match stream.read_buf(&mut sniffed).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    let protocol = match tokio::time::timeout(server.config.handshake_timeout, read).await {
        Ok(Some(protocol)) => protocol,
        Ok(None) => {
            tracing::debug!(%peer, "closing connection: not a protocol this server speaks");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "closing connection: nothing recognisable before the handshake timeout");
            return;
        }
    };
    if !server.config.protocols.contains(protocol) {
        tracing::debug!(%peer, protocol = protocol.name(), "closing connection: protocol switched off");
        return;
    }
    match protocol {
        Protocol::Native => super::connection::serve(stream, sniffed, peer, server, shutdown).await,
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            let io = crate::transport::rewind::Rewind::new(sniffed, stream);
            super::grpc::serve(io, peer, server, shutdown).await;
        }
        Protocol::JsonRpc => super::jsonrpc::serve(stream, sniffed, peer, server, shutdown).await,
        Protocol::GoRpc => super::gorpc::serve(stream, sniffed, peer, server, shutdown).await,
        #[cfg(feature = "http-json")]
        Protocol::HttpJson => {
            let io = crate::transport::rewind::Rewind::new(sniffed, stream);
            super::http::serve(io, peer, server, shutdown).await;
        }
        #[allow(unreachable_patterns)]
        other => {
            tracing::debug!(%peer, protocol = other.name(), "closing connection: support for this protocol is not compiled in");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_can_be_switched_off() {
        let all = Protocols::default();
        assert!(Protocol::ALL.iter().all(|p| all.contains(*p)));
        let some = all.without(Protocol::JsonRpc);
        assert!(!some.contains(Protocol::JsonRpc) && some.contains(Protocol::Grpc));
        let only = Protocols::of([Protocol::Native]);
        assert!(only.contains(Protocol::Native) && !only.contains(Protocol::HttpJson));
    }
}
