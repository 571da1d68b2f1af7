//! `courier-bench netrpc`: Go's default `net/rpc` (gob over TCP), side by
//! side: Go's `rpc.Dial` clients calling Go's own server and a courier
//! server, and courier's client (`ChannelBuilder::go_rpc`) calling Go's
//! server, each load generator and server a process of its own, in
//! interleaved repeats (medians).
//!
//! The Go program is `go/netrpc_load` (standard library only), built with
//! the system's Go (Debian's `golang-go`) in GOPATH mode on first use.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier::Channel;
use serde::{Deserialize, Serialize};

use crate::systems::BoxError;

/// Go's `Args{X, Y int}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Args {
    x: i64,
    y: i64,
}

/// The service both servers offer.
#[courier::service(name = "Arith")]
pub(crate) trait Arith {
    /// `X + Y`.
    async fn add(&self, args: Args) -> i64;
}

pub(crate) struct ArithImpl;

impl Arith for ArithImpl {
    async fn add(&self, args: Args) -> i64 {
        args.x.wrapping_add(args.y)
    }
}

/// What one load run measured (the Go program prints the same fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Measured {
    calls: u64,
    errors: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// A workload: connections and calls in flight on each.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    conns: usize,
    inflight: usize,
}

const SHAPES: [Shape; 2] = [
    Shape { name: "1 connection, 1 call at a time", conns: 1, inflight: 1 },
    Shape { name: "4 connections x 32 in flight", conns: 4, inflight: 32 },
];

/// Build `go/netrpc_load` into `target/go-bench/`.
fn build_go() -> Result<PathBuf, BoxError> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/netrpc_load");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("go-bench");
    std::fs::create_dir_all(&target)?;
    let binary = target.join("netrpc_load");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", target.join("gopath"))
        .env("GOCACHE", target.join("cache"))
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .status()
        .map_err(|err| format!("no `go` ({err}): apt-get install --no-install-recommends golang-go"))?;
    if !status.success() {
        return Err(format!("go build of {} failed: {status}", source.display()).into());
    }
    Ok(binary)
}

/// A server process and its address, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `command`, which prints `listening on ADDR` first.
fn start(mut command: Command) -> Result<Server, BoxError> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.trim().strip_prefix("listening on ").ok_or_else(|| format!("unexpected: {line:?}"))?;
    Ok(Server { addr: addr.to_owned(), child })
}

fn run_load(mut command: Command) -> Result<Measured, BoxError> {
    let output = command.stdin(Stdio::null()).stderr(Stdio::inherit()).output()?;
    if !output.status.success() {
        return Err(format!("the load generator failed: {}", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().ok_or("the load generator printed nothing")?;
    Ok(serde_json::from_str(last.trim_start_matches("result "))?)
}

/// The Markdown table, after `repeats` interleaved rounds.
pub(crate) fn run(duration: Duration, repeats: usize) -> Result<String, BoxError> {
    let go = build_go()?;
    let exe = std::env::current_exe()?;
    let go_server = start({
        let mut command = Command::new(&go);
        command.arg("-serve");
        command
    })?;
    let courier_server = start({
        let mut command = Command::new(&exe);
        command.args(["serve-netrpc", "--listen", "127.0.0.1:0"]);
        command
    })?;
    let seconds = format!("{}s", duration.as_secs_f64());
    // (shape, pair) -> samples.
    let pairs = ["Go client -> Go server", "Go client -> courier server", "courier client -> Go server"];
    let mut samples: Vec<Vec<Vec<Measured>>> = vec![vec![Vec::new(); pairs.len()]; SHAPES.len()];
    for repeat in 1..=repeats {
        for (s, shape) in SHAPES.iter().enumerate() {
            for (p, pair) in pairs.iter().enumerate() {
                let (conns, inflight) = (shape.conns.to_string(), shape.inflight.to_string());
                let measured = if p < 2 {
                    let server = if p == 0 { &go_server } else { &courier_server };
                    let mut command = Command::new(&go);
                    command.args(["-addr", &server.addr, "-conns", &conns, "-inflight", &inflight]);
                    command.args(["-duration", &seconds, "-warmup", "1s"]);
                    run_load(command)?
                } else {
                    let mut command = Command::new(&exe);
                    command.args(["netrpc-load", "--addr", &go_server.addr, "--conns", &conns]);
                    command.args([
                        "--inflight",
                        &inflight,
                        "--duration",
                        &duration.as_secs_f64().to_string(),
                    ]);
                    run_load(command)?
                };
                eprintln!(
                    "[{repeat}/{repeats}] {:<32} {:<28} {:>9.0} calls/s  p50 {:>6.0} us  p99 {:>6.0} us  {} errors",
                    shape.name,
                    pair,
                    measured.calls as f64 / measured.seconds,
                    measured.p50_us,
                    measured.p99_us,
                    measured.errors
                );
                samples[s][p].push(measured);
            }
        }
    }
    let median = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut out = format!(
        "Go's net/rpc (gob over TCP), `Arith.Add`, medians of {repeats} interleaved {:.0} s runs\n\n\
         | workload | pair | calls/s | p50 us | p99 us | vs Go -> Go |\n|---|---|---:|---:|---:|---:|\n",
        duration.as_secs_f64()
    );
    for (s, shape) in SHAPES.iter().enumerate() {
        let rate = |p: usize| median(samples[s][p].iter().map(|m| m.calls as f64 / m.seconds).collect());
        let baseline = rate(0);
        for (p, pair) in pairs.iter().enumerate() {
            let runs = &samples[s][p];
            out.push_str(&format!(
                "| {} | {pair} | {:.0} | {:.0} | {:.0} | {:.2}x |\n",
                shape.name,
                rate(p),
                median(runs.iter().map(|m| m.p50_us).collect()),
                median(runs.iter().map(|m| m.p99_us).collect()),
                rate(p) / baseline
            ));
        }
    }
    let errors: u64 = samples.iter().flatten().flatten().map(|m| m.errors).sum();
    if errors > 0 {
        let first = samples.iter().flatten().flatten().find_map(|m| m.first_error.clone());
        out.push_str(&format!("\n{errors} errors; the first: {first:?}\n"));
    }
    Ok(out)
}

/// Serve `Arith` with courier until killed (used by `netrpc`).
pub(crate) async fn serve(listen: SocketAddr) -> Result<(), BoxError> {
    let listening = courier::Server::builder().add_service(ArithServer::new(ArithImpl)).bind(listen).await?;
    crate::say(&format!("listening on {}", listening.local_addr()));
    listening.serve().await?;
    Ok(())
}

/// courier's client calling a Go server (used by `netrpc`): the same load
/// as the Go program's, the same output.
pub(crate) async fn load(
    addr: String,
    conns: usize,
    inflight: usize,
    duration: Duration,
) -> Result<Measured, BoxError> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        // One connection each, as one rpc.Dial client.
        let channel = Channel::builder(addr.clone()).go_rpc().pool_size(1).connect().await?;
        clients.push(Arc::new(ArithClient::new(channel)));
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in &clients {
        for _ in 0..inflight {
            let (client, measuring, stop, errors) =
                (client.clone(), measuring.clone(), stop.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0i64;
                let mut first = None;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = client.add(Args { x: n, y: 1 }).await;
                    if measuring.load(Ordering::Relaxed) {
                        match answer {
                            Ok(sum) if sum == n + 1 => latencies.push(started.elapsed().as_secs_f64() * 1e6),
                            other => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                first.get_or_insert_with(|| format!("{other:?}"));
                            }
                        }
                    }
                    n += 1;
                }
                (latencies, first)
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut first_error = None;
    for task in tasks {
        let (latencies, first) = task.await?;
        all.extend(latencies);
        first_error = first_error.or(first);
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all.get(((all.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0.0);
    Ok(Measured {
        calls: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50_us: at(0.5),
        p99_us: at(0.99),
        first_error,
    })
}
