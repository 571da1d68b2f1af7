//! tarpc over TCP with its bincode transport (length-delimited frames).

use std::net::SocketAddr;

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::net::{TcpListener, TcpStream};

use super::BoxError;

/// Sends a string back.
#[tarpc::service]
pub(crate) trait Echo {
    /// Return `payload`.
    async fn echo(payload: String) -> String;
}

#[derive(Clone)]
struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(self, _: tarpc::context::Context, payload: String) -> String {
        payload
    }
}

pub(crate) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    loop {
        let (stream, _) = listener.accept().await?;
        // tarpc's own `tcp::listen` leaves Nagle on; every system here gets
        // TCP_NODELAY.
        stream.set_nodelay(true)?;
        let transport =
            tarpc::serde_transport::new(Framed::new(stream, LengthDelimitedCodec::new()), Bincode::default());
        // tarpc's documented pattern: each request future on its own task.
        let responses = BaseChannel::with_defaults(transport).execute(EchoImpl.serve());
        tokio::spawn(responses.for_each(|response| async move {
            tokio::spawn(response);
        }));
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<EchoClient, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let transport =
        tarpc::serde_transport::new(Framed::new(stream, LengthDelimitedCodec::new()), Bincode::default());
    Ok(EchoClient::new(tarpc::client::Config::default(), transport).spawn())
}
