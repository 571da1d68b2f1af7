//! A courier server in its own process, for tests that kill one:
//!
//! ```text
//! courier-test-server ADDR                                  # Calculator, Probe, Whoami, Flaky, Hop
//! ... [--relay-to ADDR | --relay-to-grpc ADDR]              # Hop passes calls on to ADDR
//! courier-test-server ADDR --registry URL --name NAME [--ttl-ms N]   # ... and register them
//! courier-test-server ADDR --registry-data DIR              # the courier registry instead
//! ... [--work WORKERS --work-ms MS]                        # and Work, a pool of that capacity
//! ... [--adaptive [--adaptive-initial N]]                  # the adaptive concurrency limit
//! ... [--memory-budget BYTES] [--max-connections N] [--request-timeout-ms N] [--request-stall-ms N]
//! ```
//!
//! With `--exit-with-stdin` it exits when its stdin closes: the test harness
//! keeps a pipe open to it, so it dies with the test process however that
//! ends.
//!
//! Prints `listening on ADDR` once bound. Logs go to stderr, at INFO unless
//! `RUST_LOG` says otherwise, as in courier's own binaries.

use std::io::Write;
use std::time::Duration;

use courier_tests::{
    Calc, CalculatorServer, FlakyImpl, FlakyServer, HopClient, HopImpl, HopServer, Named, ProbeImpl,
    ProbeServer, WhoamiServer, WorkPool, WorkServer,
};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--exit-with-stdin") {
        std::thread::spawn(|| {
            // Nothing is ever written: EOF (or an error) means the parent is gone.
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
    }
    let addr = args.first().cloned().unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let mut work = None;
    let builder = match flag(&args, "--registry-data") {
        Some(dir) => courier_registry::open(dir).await?.add_to(courier::Server::builder()),
        None => {
            let name = flag(&args, "--name").unwrap_or_else(|| "child".to_owned());
            // A hop of a chain: the next hop over courier's protocol or gRPC.
            let next = match (flag(&args, "--relay-to"), flag(&args, "--relay-to-grpc")) {
                (Some(addr), _) => Some(courier::Channel::builder(addr).connect().await?),
                (None, Some(addr)) => Some(courier::Channel::builder(addr).grpc().connect().await?),
                (None, None) => None,
            };
            let mut builder = courier::Server::builder()
                .add_service(CalculatorServer::new(Calc))
                .add_service(ProbeServer::new(ProbeImpl::default()))
                .add_service(WhoamiServer::new(Named(name)))
                .add_service(FlakyServer::new(FlakyImpl::default()))
                .add_service(HopServer::new(HopImpl::new(next.map(HopClient::new))));
            if let Some(workers) = flag(&args, "--work").and_then(|n| n.parse().ok()) {
                let millis = flag(&args, "--work-ms").and_then(|ms| ms.parse().ok()).unwrap_or(10);
                let pool = WorkPool::new(workers, Duration::from_millis(millis));
                work = Some(pool.clone());
                builder = builder.add_service(WorkServer::new(pool));
            }
            if let Some(url) = flag(&args, "--registry") {
                let registry = courier::registry::connect(&url).await?;
                let ttl = flag(&args, "--ttl-ms").and_then(|ms| ms.parse().ok()).unwrap_or(2000);
                builder = builder.register_with(&registry).registration_ttl(Duration::from_millis(ttl));
            }
            builder
        }
    };
    // Server limits, for the tests of a server protecting itself.
    let number = |name: &str| flag(&args, name).and_then(|value| value.parse::<u64>().ok());
    let mut builder = builder;
    if let Some(bytes) = number("--memory-budget") {
        builder = builder.memory_budget(usize::try_from(bytes)?);
    }
    if let Some(limit) = number("--max-connections") {
        builder = builder.max_connections(usize::try_from(limit)?);
    }
    if let Some(ms) = number("--request-timeout-ms") {
        builder = builder.request_timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = number("--request-stall-ms") {
        builder = builder.request_stall_timeout(Duration::from_millis(ms));
    }
    if args.iter().any(|arg| arg == "--adaptive") {
        let mut limit = courier::AdaptiveLimit::default();
        if let Some(initial) = number("--adaptive-initial") {
            limit = limit.initial(usize::try_from(initial)?);
        }
        builder = builder.adaptive_concurrency(limit);
    }
    let listening = builder.bind(addr).await?;
    if let Some(pool) = &work {
        pool.served_by(listening.stats());
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listening.local_addr())?;
    stdout.flush()?;
    listening.serve_with_shutdown(tokio::signal::ctrl_c()).await?;
    Ok(())
}
