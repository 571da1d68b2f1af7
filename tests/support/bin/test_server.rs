//! A courier server in its own process, for tests that kill one:
//!
//! ```text
//! courier-test-server ADDR                                  # Calculator, Probe, Whoami
//! courier-test-server ADDR --registry URL --name NAME [--ttl-ms N]   # ... and register them
//! courier-test-server ADDR --registry-data DIR              # the courier registry instead
//! ```
//!
//! Prints `listening on ADDR` once bound.

use std::io::Write;
use std::time::Duration;

use courier_tests::{Calc, CalculatorServer, Named, ProbeImpl, ProbeServer, WhoamiServer};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().cloned().unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let builder = match flag(&args, "--registry-data") {
        Some(dir) => {
            courier::Server::builder().add_service(courier_registry::open(dir).await?.into_service())
        }
        None => {
            let name = flag(&args, "--name").unwrap_or_else(|| "child".to_owned());
            let mut builder = courier::Server::builder()
                .add_service(CalculatorServer::new(Calc))
                .add_service(ProbeServer::new(ProbeImpl::default()))
                .add_service(WhoamiServer::new(Named(name)));
            if let Some(url) = flag(&args, "--registry") {
                let registry = courier::registry::connect(&url).await?;
                let ttl = flag(&args, "--ttl-ms").and_then(|ms| ms.parse().ok()).unwrap_or(2000);
                builder = builder.register_with(&registry).registration_ttl(Duration::from_millis(ttl));
            }
            builder
        }
    };
    let listening = builder.bind(addr).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listening.local_addr())?;
    stdout.flush()?;
    listening
        .serve_with_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
