//! courier's native protocol.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::BoxError;

/// Sends a string back.
#[courier::service]
pub(crate) trait Echo {
    /// Return `payload`.
    async fn echo(&self, payload: String) -> String;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, payload: String) -> String {
        payload
    }
}

pub(crate) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    courier::Server::builder().add_service(EchoServer::new(EchoImpl)).listen_on(listener)?.serve().await?;
    Ok(())
}

pub(crate) async fn connect(addr: SocketAddr, codec: courier::Codec) -> Result<EchoClient, BoxError> {
    Ok(EchoClient::connect(addr.to_string()).await?.with_codec(codec))
}
