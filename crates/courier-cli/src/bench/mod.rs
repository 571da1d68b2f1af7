//! `courier bench`: load-test one method of a courier service.
//!
//! Opens the connections, checks the method with one probe call, then keeps
//! `--concurrency` calls in flight until `--duration` passes or
//! `--requests` calls are done, optionally paced to `--rate` calls per
//! second. With a rate, each call's latency counts from when it was
//! scheduled to start, not when it did, so a stalled server cannot hide
//! its stall (the "coordinated omission" wrk2 corrects for).

mod engine;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier::{CallOptions, Channel, Code, Codec};

use crate::duration;

/// Options of `courier bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// The server, `host:port` (courier's native protocol).
    target: String,
    /// The method to call, `Service.Method` (e.g. `Calculator.Add`).
    #[arg(long, short = 'm')]
    method: String,
    /// The arguments as JSON, e.g. `{"a":1,"b":2}`; `{}` for none.
    #[arg(long, short = 'D', conflicts_with = "data_file", default_value = "{}")]
    data: String,
    /// Read the JSON arguments from a file.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Calls in flight at once, spread over the connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    concurrency: usize,
    /// Connections to open.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// How long to run (default 10s, unless --requests is given).
    #[arg(long, short = 'd', value_parser = duration::parse)]
    duration: Option<Duration>,
    /// How many calls to make.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    requests: Option<u64>,
    /// Calls per second, in total (0: as fast as the server answers).
    #[arg(long, short = 'r', default_value_t = 0)]
    rate: u64,
    /// Timeout of each call.
    #[arg(long, short = 't', value_parser = duration::parse, default_value = "20s")]
    timeout: Duration,
    /// Metadata sent with every call, `key=value`; repeatable.
    #[arg(long = "metadata", short = 'H', value_parser = parse_metadata)]
    metadata: Vec<(String, String)>,
    /// Threads for the load generator (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn parse_metadata(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("metadata must be key=value, got `{text}`"))
}

/// Errors that stop a benchmark before it starts.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("--concurrency and --connections must be at least 1")]
    NoWorkers,
    #[error("could not read {path}: {source}")]
    DataFile { path: PathBuf, source: std::io::Error },
    #[error("the arguments are not valid JSON: {0}")]
    Data(serde_json::Error),
    #[error("could not start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Connect(#[from] courier::ConnectError),
    #[error("the probe call to {method} failed, so no load was started: {status}")]
    Probe { method: String, status: courier::Status },
}

pub(crate) fn run(args: BenchArgs) -> Result<ExitCode, BenchError> {
    if args.concurrency == 0 || args.connections == 0 {
        return Err(BenchError::NoWorkers);
    }
    let data = match &args.data_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| BenchError::DataFile { path: path.clone(), source })?,
        None => args.data.clone(),
    };
    // Validate and compact the JSON once; every call sends these bytes.
    let value: serde_json::Value = serde_json::from_str(&data).map_err(BenchError::Data)?;
    let body = Bytes::from(serde_json::to_vec(&value).map_err(BenchError::Data)?);

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.enable_all().build().map_err(BenchError::Runtime)?;
    runtime.block_on(bench(args, body))
}

async fn bench(args: BenchArgs, body: Bytes) -> Result<ExitCode, BenchError> {
    let target = args.target.strip_prefix("courier://").unwrap_or(&args.target).to_owned();
    let mut options = CallOptions::new().with_codec(Codec::Json).with_timeout(args.timeout);
    for (key, value) in &args.metadata {
        options = options.with_metadata(key, value.clone());
    }
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(Channel::builder(target.clone()).connect().await?);
    }
    // One call first: a wrong method or arguments that do not fit should be
    // one clear error, not a million identical ones. Other failures (the
    // method's own errors, timeouts) are worth measuring, so the load runs.
    let sample = match channels[0].unary_bytes(&args.method, body.clone(), &options).await {
        Ok(reply) => reply,
        Err(status) if matches!(status.code(), Code::Unimplemented | Code::InvalidArgument) => {
            return Err(BenchError::Probe { method: args.method.clone(), status });
        }
        Err(status) => Bytes::from(format!("(the probe call failed: {status})")),
    };

    let stop = match (args.requests, args.duration) {
        (Some(count), _) => engine::Stop::Count(count),
        (None, Some(duration)) => engine::Stop::After(duration),
        (None, None) => engine::Stop::After(Duration::from_secs(10)),
    };
    let plan = engine::Plan {
        method: args.method.clone(),
        body,
        options,
        concurrency: args.concurrency,
        stop,
        rate: (args.rate > 0).then_some(args.rate),
    };
    let progress = report::Progress::new(&plan, args.quiet);
    let outcome = engine::run(channels, plan, Arc::clone(&progress.counters)).await;
    progress.finish();
    let ok = outcome.statuses.get(&Code::Ok).copied().unwrap_or(0);
    report::print(&target, &args.method, &outcome, &sample);
    Ok(if ok == 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
