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

/// The server of the governance scenarios: with the adaptive concurrency
/// limit when `governed`.
pub(crate) async fn serve_governed(listener: TcpListener, governed: bool) -> Result<(), BoxError> {
    let mut builder = courier::Server::builder().add_service(EchoServer::new(EchoImpl));
    if governed {
        builder = builder.adaptive_concurrency(courier::AdaptiveLimit::default());
    }
    builder.listen_on(listener)?.serve().await?;
    Ok(())
}

/// A discovered channel to the one instance at `addr` (registered in an
/// in-process registry): with the default governance (retry policy, retry
/// budget, instance and method breakers) when `governed`, with all of it
/// off otherwise, so the two differ in governance alone.
pub(crate) async fn discover(addr: SocketAddr, governed: bool) -> Result<EchoClient, BoxError> {
    use courier::resilience::{BreakerPolicy, RetryBudget, RetryPolicy};
    let registry = courier::registry::connect("mem://").await?;
    // The lease lives as long as the registry, which the channel's watch
    // keeps alive.
    let lease = registry
        .register(
            courier::discovery::Instance::new("Echo", addr.to_string()),
            std::time::Duration::from_secs(3600),
        )
        .await?;
    std::mem::forget(lease);
    let mut builder = EchoClient::discover(&registry, "Echo").no_cache();
    if !governed {
        builder = builder
            .retry_policy(RetryPolicy::none())
            .retry_budget(RetryBudget::none())
            .breaker(BreakerPolicy::disabled())
            .method_breaker(BreakerPolicy::disabled());
    }
    let client = builder.build().await?;
    for _ in 0..200 {
        if client.channel().instances().is_some_and(|i| !i.is_empty()) {
            return Ok(client);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Err("the discovered channel never saw its instance".into())
}
