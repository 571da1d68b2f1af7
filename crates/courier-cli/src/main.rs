//! `courier`: the command line for courier services.
//!
//! ```text
//! courier demo                                  # registry, providers and a consumer, live
//! courier registry serve --listen 127.0.0.1:7600 --data-dir ./registry
//! courier ls [Service] --registry courier://127.0.0.1:7600
//! courier bench 127.0.0.1:9000 --method Calculator.Add --data '{"a":1,"b":2}' -c 64 -d 10s
//! courier bench 127.0.0.1:9000 --method Feed.Count --stream server --data '{"from":1,"n":100}'
//! ```
//!
//! ## Layout
//!
//! - `bench/`: `courier bench`, a load tester like ghz or wrk: `mod` (the
//!   options), `engine` (workers, pacing, per-call recording), `stream`
//!   (streaming methods: server, client and bidirectional streams),
//!   `grpc` (JSON to protobuf), `report` (the summary and histogram).
//! - `demo`: `courier demo`.
//! - `registry_cmd`: `courier registry serve` and `courier ls`.
//! - `duration`: parsing `10s`, `500ms`, `2m`.
//!
//! ## Output
//!
//! Command output goes to stdout (scripts parse it); logs go to stderr,
//! at INFO unless `RUST_LOG` says otherwise (`RUST_LOG=warn` for quiet,
//! `RUST_LOG=courier=debug` for the library's detail).
//!
//! ## Feature flags
//!
//! - `etcd` (off by default): accept `etcd://` registry URLs (building it
//!   needs `protoc`).

// A command-line tool's job is to print; the workspace lint is for libraries.
#![allow(clippy::print_stdout)]

mod bench;
mod demo;
mod duration;
mod registry_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "courier", version, about = "The command line for courier services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Registration and discovery in one process: an embedded registry,
    /// three providers and a consumer; one provider crashes, one stops.
    Demo,
    /// The bundled registry server.
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCommand),
    /// List registered instances: versions, weights, lease ages.
    Ls {
        /// Only this service.
        service: Option<String>,
        /// The registry (`courier://`, `mem://`, or `etcd://` with the etcd
        /// feature). Default: $COURIER_REGISTRY, else courier://127.0.0.1:7600.
        #[arg(long, env = "COURIER_REGISTRY", default_value = "courier://127.0.0.1:7600")]
        registry: String,
    },
    /// Load-test a method of a courier or gRPC service: concurrency,
    /// duration or count, optional rate limit; prints latency percentiles
    /// and a histogram.
    Bench(Box<bench::BenchArgs>),
}

/// Log to stderr, INFO by default, `RUST_LOG` honoured. Stderr, because
/// stdout carries command output that scripts and tests parse.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person watching, not for a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result: Result<std::process::ExitCode, Box<dyn std::error::Error>> = match cli.command {
        Command::Demo => demo::run().map_err(Into::into),
        Command::Registry(command) => registry_cmd::run(command).map_err(Into::into),
        // The library's message names the feature for a crate depending on
        // courier; someone running this binary needs to rebuild it instead.
        Command::Ls { registry, .. } if registry.starts_with("etcd://") && !cfg!(feature = "etcd") => {
            Err("etcd:// registries need courier-cli's `etcd` feature: \
                 cargo install courier-cli --features etcd (building it needs protoc)"
                .into())
        }
        Command::Ls { service, registry } => {
            registry_cmd::ls(&registry, service.as_deref()).map_err(Into::into)
        }
        Command::Bench(args) => bench::run(*args).map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("courier: {err}");
            std::process::ExitCode::from(2)
        }
    }
}
