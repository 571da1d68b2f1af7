//! The classic Go net/rpc example, in courier: `Add`, and `Div` with a
//! division-by-zero error that comes back to the caller as its own type.
//!
//! ```text
//! cargo run --release --example calculator                # server + client in one process
//! cargo run --release --example calculator -- serve 127.0.0.1:9000
//! cargo run --release --example calculator -- client 127.0.0.1:9000
//! ```

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Why a calculation failed; travels to the caller inside the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum CalcError {
    /// `b` was zero.
    #[error("division by zero")]
    DivisionByZero,
}

/// Arithmetic over the wire.
#[courier::service(version = "1.0.0")]
pub trait Calculator {
    /// `a + b`.
    async fn add(&self, a: i64, b: i64) -> i64;

    /// `a / b`; fails with [`CalcError::DivisionByZero`] when `b` is zero.
    #[courier(idempotent)]
    async fn div(&self, a: f64, b: f64) -> Result<f64, CalcError>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn div(&self, a: f64, b: f64) -> Result<f64, CalcError> {
        if b == 0.0 { Err(CalcError::DivisionByZero) } else { Ok(a / b) }
    }
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
                .add_service(CalculatorServer::new(Calc))
                .bind("127.0.0.1:0")
                .await?
                .start();
            let addr = server.local_addr().to_string();
            say(format!("server listening on {addr}"));
            run_client(&addr).await?;
            say("shutting down the server gracefully".to_owned());
            server.shutdown().await?;
            say("done".to_owned());
        }
        ["serve", addr] => {
            let listening = courier::Server::builder()
                .add_service(CalculatorServer::new(Calc))
                .bind(addr.to_string())
                .await?;
            say(format!("serving Calculator on {} (Ctrl-C stops)", listening.local_addr()));
            listening.serve_with_shutdown(tokio::signal::ctrl_c()).await?;
        }
        ["client", addr] => run_client(addr).await?,
        _ => {
            eprintln!("usage: calculator [serve ADDR | client ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}

async fn run_client(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let calc = CalculatorClient::connect(addr).await?;
    let service = CalculatorClient::DESCRIPTOR;
    let methods: Vec<&str> = service.methods.iter().map(|m| m.name).collect();
    say(format!(
        "client connected to {addr}: {} v{} offers {}",
        service.name,
        service.version,
        methods.join(", ")
    ));

    say(format!("add(10, 20)              = {}", calc.add(10, 20).await?));
    say(format!("div(10, 4)               = {}", calc.div(10.0, 4.0).await?));

    let err = calc.div(1.0, 0.0).await.expect_err("dividing by zero fails");
    say(format!("div(1, 0)                -> {} (typed: {:?})", err, err.app_error::<CalcError>()));

    let pending = calc.spawn_add(1, 2);
    say(format!("spawn_add(1, 2) .. await = {}", pending.await?));

    let json = calc.with_codec(courier::Codec::Json);
    say(format!("add(7, 8) as JSON        = {}", json.add(7, 8).await?));

    let quick = calc.with_timeout(Duration::from_millis(200));
    say(format!("add(2, 2) with timeout   = {}", quick.add(2, 2).await?));

    let start = Instant::now();
    let calls: Vec<_> = (0..1000).map(|i| calc.spawn_add(i, i)).collect();
    let mut correct = 0;
    for (i, call) in (0..).zip(calls) {
        if call.await? == 2 * i {
            correct += 1;
        }
    }
    say(format!(
        "1000 concurrent adds     = {correct} correct in {:.1} ms over one connection",
        start.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

#[allow(clippy::print_stdout)]
fn say(line: String) {
    println!("  {line}");
}
