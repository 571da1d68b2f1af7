//! The calculator and probe services in their own process, for tests that
//! kill a server: `courier-test-server 127.0.0.1:PORT`. Prints
//! `listening on ADDR` once bound.

use std::io::Write;

use courier_tests::{Calc, CalculatorServer, ProbeImpl, ProbeServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listening = courier::Server::builder()
        .add_service(CalculatorServer::new(Calc))
        .add_service(ProbeServer::new(ProbeImpl::default()))
        .bind(addr)
        .await?;
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
