//! courier-bench: the same echo workload against courier (native protocol,
//! binary and JSON codecs), tonic, tarpc and raw TCP, with server and client
//! in separate processes, in one run, so the ratios mean something.
//!
//! ```text
//! cargo run --release -p courier-bench -- run            # everything, ~6 minutes
//! cargo run --release -p courier-bench -- run --scenarios pipelined --systems courier-bin,tarpc
//! cargo run --release -p courier-bench -- governance     # hedging and outage experiments, ~1 minute
//! cargo run --release -p courier-bench -- registry       # courier's registry, etcd, ZooKeeper, Redis
//! ```
//!
//! ## Layout
//!
//! - `systems/`: one module per system: an echo server and a client.
//! - `scenario`: connections, calls in flight and payload size per workload.
//! - `load`: the client process: drive the load, record latencies (HDR histogram).
//! - `run`: the orchestrator: spawn server and client processes, read /proc.
//! - `report`: medians, ratios to courier native, and the goals.
//! - `measure`: CPU time and memory of a process from /proc.
//! - `governance`: hedging against slow answers; the load of a total outage.
//! - `netrpc`: Go's net/rpc clients against Go's server and courier's, and
//!   courier's client against Go's server (`go/netrpc_load`).
//! - `gob`: courier's gob codec against the `gobwire` crate, per value.
//! - `registry`: registrations, keep-alives, watch fan-out, memory and
//!   restart of courier's registry, etcd, ZooKeeper and Redis (`peers`
//!   starts each as a durable server process).
//!
//! ## Feature flags
//!
//! None.

mod gob;
mod governance;
mod load;
mod measure;
mod netrpc;
mod registry;
mod report;
mod run;
mod scenario;
mod systems;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use scenario::ScenarioName;
use systems::{BoxError, System};

#[derive(Parser)]
#[command(about = "courier against tonic, tarpc and raw TCP, side by side")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the systems through the scenarios, interleaved, and print the table.
    Run {
        /// Seconds measured per run.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Seconds of warm-up before each measured window.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Runs of each system in each scenario; the table shows medians.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Systems to run (default: all).
        #[arg(long, value_delimiter = ',')]
        systems: Vec<System>,
        /// Scenarios to run (default: all).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<ScenarioName>,
        /// Idle connections for the memory measurement (0 skips it).
        #[arg(long, default_value_t = 1000)]
        idle_connections: usize,
    },
    /// Hedging against slow answers and the load of a total outage, in
    /// this process; prints Markdown tables.
    Governance {
        /// Seconds measured per row.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// The registries side by side: registrations, keep-alives, watch
    /// fan-out, memory per instance, restart; prints a Markdown table.
    Registry {
        /// Backends to run (default: all four).
        #[arg(long, value_delimiter = ',')]
        backends: Vec<registry::Backend>,
        /// Concurrent clients (a connection each).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds per measured round.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Back-to-back registration rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Instances registered for the memory, keep-alive, watch and
        /// restart measurements.
        #[arg(long, default_value_t = 100_000)]
        instances: usize,
        /// Watchers of the one watched service.
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Changes made to the watched service.
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    /// Go's net/rpc side by side: Go clients against Go's server and
    /// courier's, courier's client against Go's server.
    Netrpc {
        /// Seconds measured per run.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Interleaved runs of each pair; the table shows medians.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Serve `Arith` for Go's net/rpc clients, printing `listening on ADDR`
    /// (used by `netrpc`).
    ServeNetrpc {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// courier's client loading a Go net/rpc server (used by `netrpc`).
    NetrpcLoad {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        inflight: usize,
        #[arg(long)]
        duration: f64,
    },
    /// courier's gob codec against the gobwire crate: ns per value to
    /// encode and decode on a stream; prints a Markdown table.
    Gob,
    /// Serve courier's registry with its data in `data_dir`, printing
    /// `listening on ADDR` (used by `registry`).
    ServeRegistry {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
    /// Serve echo for one system, printing `listening on ADDR` (used by `run`).
    Serve {
        #[arg(long)]
        system: System,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Drive one scenario against a server (used by `run`).
    Load {
        #[arg(long)]
        system: System,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        scenario: ScenarioName,
        #[arg(long)]
        warmup: f64,
        #[arg(long)]
        duration: f64,
    },
    /// Open idle connections, print `ready`, and hold them until stdin closes
    /// (used by `run`).
    Idle {
        #[arg(long)]
        system: System,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        connections: usize,
    },
}

/// Each process gets two worker threads, like the anchors in the issue.
fn runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

#[allow(clippy::print_stdout)]
pub(crate) fn say(line: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn main() -> Result<(), BoxError> {
    match Cli::parse().command {
        Cmd::Run { duration, warmup, repeats, systems, scenarios, idle_connections } => {
            let systems = if systems.is_empty() { System::ALL.to_vec() } else { systems };
            let scenarios = if scenarios.is_empty() { ScenarioName::ALL.to_vec() } else { scenarios };
            let exe = std::env::current_exe()?;
            let (warmup, duration) = (Duration::from_secs_f64(warmup), Duration::from_secs_f64(duration));
            let mut samples = Vec::new();
            for repeat in 1..=repeats {
                for &scenario in &scenarios {
                    for &system in &systems {
                        let sample = run::sample(&exe, system, scenario, warmup, duration)?;
                        eprintln!(
                            "[{repeat}/{repeats}] {:<40} {:<13} {:>9.0} req/s  p99 {:>8.0} us",
                            scenario.label(),
                            system.name(),
                            sample.load.requests as f64 / sample.load.seconds,
                            sample.load.p99_us
                        );
                        if let Some(error) = &sample.load.first_error {
                            eprintln!("    {} errors; the first: {error}", sample.load.errors);
                        }
                        samples.push(sample);
                    }
                }
            }
            let mut idle = Vec::new();
            if idle_connections > 0 {
                for &system in &systems {
                    let sample = run::idle(&exe, system, idle_connections)?;
                    eprintln!(
                        "idle: {:<13} {:.1} KiB per connection",
                        system.name(),
                        sample.kib_per_connection
                    );
                    idle.push(sample);
                }
            }
            say(&report::render(&samples, &idle, &systems, &scenarios));
            Ok(())
        }
        Cmd::Governance { duration } => runtime()?.block_on(async {
            say(&governance::run(Duration::from_secs_f64(duration)).await?);
            Ok(())
        }),
        Cmd::Registry { backends, clients, duration, rounds, instances, watchers, changes } => {
            let config = registry::Config {
                backends: if backends.is_empty() { registry::Backend::ALL.to_vec() } else { backends },
                clients,
                duration: Duration::from_secs_f64(duration),
                rounds,
                instances,
                watchers,
                changes,
            };
            runtime()?.block_on(async {
                say(&registry::run(&config).await?);
                Ok(())
            })
        }
        Cmd::Netrpc { duration, repeats } => {
            say(&netrpc::run(Duration::from_secs_f64(duration), repeats)?);
            Ok(())
        }
        Cmd::ServeNetrpc { listen } => runtime()?.block_on(netrpc::serve(listen)),
        Cmd::NetrpcLoad { addr, conns, inflight, duration } => runtime()?.block_on(async {
            let measured = netrpc::load(addr, conns, inflight, Duration::from_secs_f64(duration)).await?;
            say(&format!("result {}", serde_json::to_string(&measured)?));
            Ok(())
        }),
        Cmd::Gob => {
            say(&gob::run()?);
            Ok(())
        }
        Cmd::ServeRegistry { listen, data_dir } => runtime()?.block_on(async {
            let registry = courier_registry::open(&data_dir).await?;
            let listening = registry.add_to(courier::Server::builder()).bind(listen).await?;
            say(&format!("listening on {}", listening.local_addr()));
            listening.serve().await?;
            Ok(())
        }),
        Cmd::Serve { system, listen } => runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            say(&format!("listening on {}", listener.local_addr()?));
            system.serve(listener).await
        }),
        Cmd::Load { system, addr, scenario, warmup, duration } => runtime()?.block_on(async {
            let report = load::run(
                system,
                addr,
                &scenario.scenario(),
                Duration::from_secs_f64(warmup),
                Duration::from_secs_f64(duration),
                || say("measuring"),
            )
            .await?;
            say(&format!("result {}", serde_json::to_string(&report)?));
            Ok(())
        }),
        Cmd::Idle { system, addr, connections } => runtime()?.block_on(async {
            let mut clients = Vec::with_capacity(connections);
            for _ in 0..connections {
                let client = system.connect(addr).await?;
                if !matches!(client, systems::Client::Raw(_)) {
                    client.echo("warm").await?;
                }
                clients.push(client);
            }
            let raw_sockets = systems::open_raw_sockets(system, addr, connections).await?;
            say("ready");
            // Hold everything until the orchestrator closes our stdin.
            tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            })
            .await?;
            drop((clients, raw_sockets));
            Ok(())
        }),
    }
}
