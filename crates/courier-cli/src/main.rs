//! `courier`: the command line for courier services.
//!
//! ```text
//! courier bench 127.0.0.1:9000 --method Calculator.Add --data '{"a":1,"b":2}' -c 64 -d 10s
//! ```
//!
//! ## Layout
//!
//! - `bench/`: `courier bench`, a load tester like ghz or wrk: `args` (the
//!   options), `engine` (workers, pacing, per-call recording), `report`
//!   (the summary and histogram).
//! - `duration`: parsing `10s`, `500ms`, `2m`.
//!
//! ## Feature flags
//!
//! None.

mod bench;
mod duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "courier", version, about = "The command line for courier services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load-test a method: concurrency, duration or count, optional rate
    /// limit; prints latency percentiles and a histogram.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("courier: {err}");
            std::process::ExitCode::from(2)
        }
    }
}
