//! tonic: gRPC over HTTP/2 with prost, as generated from `proto/echo.proto`.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use super::BoxError;

#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod pb {
    tonic::include_proto!("bench");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

pub(crate) type Client = EchoClient<Channel>;

struct EchoImpl;

#[tonic::async_trait]
impl Echo for EchoImpl {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply { payload: request.into_inner().payload }))
    }
}

pub(crate) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    // `serve_with_incoming` takes sockets as they come: set TCP_NODELAY here,
    // as `Server::tcp_nodelay` only applies to listeners tonic binds itself.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    });
    Server::builder().add_service(EchoServer::new(EchoImpl)).serve_with_incoming(incoming).await?;
    Ok(())
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<Client, BoxError> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
    Ok(EchoClient::new(channel))
}

pub(crate) async fn echo(client: &Client, payload: &str) -> Result<String, BoxError> {
    let mut client = client.clone();
    let reply = client.echo(EchoRequest { payload: payload.to_owned() }).await?;
    Ok(reply.into_inner().payload)
}
