//! The systems under test. Each serves the same echo workload (a string in,
//! the same string out) and connects a client to it.
//!
//! - `courier-bin`, `courier-json`: courier's native protocol, binary or
//!   JSON codec.
//! - `courier-grpc`: courier's gRPC mode (server and client), protobuf from
//!   the same `proto/echo.proto` as tonic.
//! - `courier-discovered`, `courier-governed`: courier native through a
//!   discovered channel, governance off and on (retry policy, budget,
//!   breakers, the server's adaptive limit): the pair measures its cost.
//! - `tonic`: gRPC over HTTP/2 with prost, generated from `proto/echo.proto`.
//! - `tarpc`: tarpc over TCP with its bincode transport.
//! - `raw`: length-prefixed frames over TCP with no framework at all, the
//!   practical ceiling for one connection.

mod courier_grpc;
mod courier_native;
mod raw;
mod tarpc_echo;
mod tonic_echo;

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Errors in the benchmark are reported, not recovered from.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum System {
    /// courier native protocol, binary codec.
    CourierBin,
    /// courier native protocol, JSON codec.
    CourierJson,
    /// courier's gRPC mode (HTTP/2, protobuf).
    CourierGrpc,
    /// courier native, binary, through a discovered channel with its
    /// governance off (no retries, budget or breakers; no adaptive limit).
    CourierDiscovered,
    /// The same with governance on: the default retry policy, retry
    /// budget, instance and method breakers, and the server's adaptive
    /// concurrency limit.
    CourierGoverned,
    /// tonic (gRPC over HTTP/2, prost).
    Tonic,
    /// tarpc (bincode over TCP).
    Tarpc,
    /// Length-prefixed echo over raw TCP.
    Raw,
}

impl System {
    /// The systems a plain `run` compares (the governance pair is asked
    /// for by name).
    pub(crate) const ALL: [System; 6] = [
        System::CourierBin,
        System::CourierJson,
        System::CourierGrpc,
        System::Tonic,
        System::Tarpc,
        System::Raw,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::CourierBin => "courier-bin",
            System::CourierJson => "courier-json",
            System::CourierGrpc => "courier-grpc",
            System::CourierDiscovered => "courier-discovered",
            System::CourierGoverned => "courier-governed",
            System::Tonic => "tonic",
            System::Tarpc => "tarpc",
            System::Raw => "raw",
        }
    }

    /// Serve echo on `listener` until the process ends.
    pub(crate) async fn serve(self, listener: TcpListener) -> Result<(), BoxError> {
        match self {
            System::CourierBin | System::CourierJson => courier_native::serve(listener).await,
            System::CourierGrpc => courier_grpc::serve(listener).await,
            System::CourierDiscovered => courier_native::serve_governed(listener, false).await,
            System::CourierGoverned => courier_native::serve_governed(listener, true).await,
            System::Tonic => tonic_echo::serve(listener).await,
            System::Tarpc => tarpc_echo::serve(listener).await,
            System::Raw => raw::serve(listener).await,
        }
    }

    /// Open one connection to `addr`.
    pub(crate) async fn connect(self, addr: SocketAddr) -> Result<Client, BoxError> {
        Ok(match self {
            System::CourierBin => {
                Client::Courier(courier_native::connect(addr, courier::Codec::Binary).await?)
            }
            System::CourierJson => {
                Client::Courier(courier_native::connect(addr, courier::Codec::Json).await?)
            }
            System::CourierGrpc => Client::CourierGrpc(courier_grpc::connect(addr).await?),
            System::CourierDiscovered => Client::Courier(courier_native::discover(addr, false).await?),
            System::CourierGoverned => Client::Courier(courier_native::discover(addr, true).await?),
            System::Tonic => Client::Tonic(tonic_echo::connect(addr).await?),
            System::Tarpc => Client::Tarpc(tarpc_echo::connect(addr).await?),
            System::Raw => Client::Raw(raw::connect(addr).await?),
        })
    }
}

/// One connection of some system.
#[derive(Clone)]
pub(crate) enum Client {
    Courier(courier_native::EchoClient),
    CourierGrpc(courier_grpc::Client),
    Tonic(tonic_echo::Client),
    Tarpc(tarpc_echo::EchoClient),
    Raw(raw::Connection),
}

impl Client {
    /// One echo call; fails if the reply is not the payload.
    pub(crate) async fn echo(&self, payload: &str) -> Result<(), BoxError> {
        let reply = match self {
            Client::Courier(client) => client.echo(payload.to_owned()).await?,
            Client::CourierGrpc(client) => courier_grpc::echo(client, payload).await?,
            Client::Tonic(client) => tonic_echo::echo(client, payload).await?,
            Client::Tarpc(client) => client.echo(tarpc::context::current(), payload.to_owned()).await?,
            Client::Raw(_) => return Err("raw connections are driven by raw::drive, not per call".into()),
        };
        if reply.len() == payload.len() { Ok(()) } else { Err("the echo differs from the payload".into()) }
    }
}

pub(crate) use raw::drive as drive_raw;

/// For the idle-memory measurement: raw TCP has no client object that holds
/// a socket, so open the sockets here (empty for the other systems).
pub(crate) async fn open_raw_sockets(
    system: System,
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<tokio::net::TcpStream>, BoxError> {
    if system != System::Raw {
        return Ok(Vec::new());
    }
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(tokio::net::TcpStream::connect(addr).await?);
    }
    Ok(sockets)
}
