//! gRPC's canonical Greeter, from `proto/helloworld.proto`, served by
//! courier: the same service answers courier's native protocol, gRPC (any
//! gRPC client in any language), JSON-RPC and HTTP/JSON, on one port.
//!
//! ```text
//! cargo run --example helloworld                         # server + clients in one process
//! cargo run --example helloworld -- serve 127.0.0.1:50051
//! cargo run --example helloworld -- client 127.0.0.1:50051
//! ```
//!
//! While it serves, try `curl -d '{"name":"curl"}' 127.0.0.1:50051/helloworld.Greeter/SayHello`.

courier::include_protos!();

use helloworld::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};

struct Hello;

impl Greeter for Hello {
    async fn say_hello(
        &self,
        cx: &courier::Context,
        request: HelloRequest,
    ) -> Result<HelloReply, courier::Status> {
        if request.name.is_empty() {
            return Err(courier::Status::invalid_argument("name must not be empty"));
        }
        let from = cx.peer_addr().map_or_else(String::new, |peer| format!(" (you are {peer})"));
        Ok(HelloReply { message: format!("Hello {}{from}", request.name) })
    }
}

async fn run_clients(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    // courier's native protocol, protobuf-encoded.
    let native = GreeterClient::connect(addr).await?;
    let reply = native.say_hello(HelloRequest { name: "native".into() }).await?;
    println!("native protocol: {}", reply.message);

    // The same client type over gRPC, as any gRPC peer would call it.
    let grpc = GreeterClient::new(courier::Channel::builder(addr).grpc().connect().await?);
    let reply = grpc.say_hello(HelloRequest { name: "gRPC".into() }).await?;
    println!("gRPC:            {}", reply.message);

    let err = grpc.say_hello(HelloRequest::default()).await.expect_err("an empty name is refused");
    println!("gRPC error:      {} ({})", err.message(), err.code().grpc_name());
    Ok(())
}

/// Logs to stderr, INFO unless `RUST_LOG` says otherwise: where the server
/// listens, and anything courier has to report.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {
            let server = courier::Server::builder()
                .add_service(GreeterServer::new(Hello))
                .bind("127.0.0.1:0")
                .await?
                .start();
            let addr = server.local_addr().to_string();
            println!("serving helloworld.Greeter on {addr}");
            run_clients(&addr).await?;
            server.shutdown().await?;
        }
        ["serve", addr] => {
            let listening = courier::Server::builder()
                .add_service(GreeterServer::new(Hello))
                .bind(addr.to_string())
                .await?;
            println!("serving helloworld.Greeter on {} (Ctrl-C stops)", listening.local_addr());
            listening.serve_with_shutdown(tokio::signal::ctrl_c()).await?;
        }
        ["client", addr] => run_clients(addr).await?,
        _ => {
            eprintln!("usage: helloworld [serve ADDR | client ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}
