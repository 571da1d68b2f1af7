//! An echo service called from plain synchronous code: `fn main()` uses the
//! blocking client and has no async runtime of its own.
//!
//! ```text
//! cargo run --example echo                         # server thread + blocking client
//! cargo run --example echo -- serve 127.0.0.1:9001
//! cargo run --example echo -- 127.0.0.1:9001 hello world
//! ```

use std::time::Duration;

/// Sends text back.
#[courier::service]
pub trait Echo {
    /// Return `message` unchanged.
    async fn echo(&self, message: String) -> String;
    /// Return `message` reversed.
    async fn reverse(&self, message: String) -> String;
}

struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, message: String) -> String {
        message
    }

    async fn reverse(&self, message: String) -> String {
        message.chars().rev().collect()
    }
}

/// Run a server on its own thread and runtime; returns its address.
fn spawn_server(addr: &str) -> Result<std::net::SocketAddr, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let listening = runtime
        .block_on(courier::Server::builder().add_service(EchoServer::new(Echoer)).bind(addr.to_owned()))?;
    let local = listening.local_addr();
    std::thread::spawn(move || runtime.block_on(listening.serve()));
    Ok(local)
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

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, words) = match args.first().map(String::as_str) {
        None => (spawn_server("127.0.0.1:0")?.to_string(), vec!["hello".to_owned(), "courier".to_owned()]),
        Some("serve") => {
            let addr = spawn_server(args.get(1).map_or("127.0.0.1:9001", String::as_str))?;
            println!("  serving Echo on {addr}; Ctrl-C stops");
            loop {
                std::thread::park();
            }
        }
        Some(addr) => (addr.to_owned(), args[1..].to_vec()),
    };

    // Everything below is plain blocking code.
    let echo = EchoBlockingClient::connect(addr.clone())?.with_timeout(Duration::from_secs(5));
    let message = words.join(" ");
    println!("  connected to {addr}");
    let echoed = echo.echo(message.clone())?;
    let reversed = echo.reverse(message.clone())?;
    println!("  echo({message:?})    = {echoed:?}");
    println!("  reverse({message:?}) = {reversed:?}");
    Ok(())
}
