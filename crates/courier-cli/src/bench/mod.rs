//! `courier bench`: load-test one method of a courier or gRPC service.
//!
//! A `host:port` (or `courier://host:port`) target is called over courier's
//! native protocol with JSON arguments; a `grpc://host:port` target (or
//! `--grpc`) over gRPC, the JSON turned into the method's protobuf message
//! using `--proto` files or the server's reflection service (see `grpc`).
//!
//! Opens the connections, checks the method with one probe call, then keeps
//! `--concurrency` calls in flight until `--duration` passes or
//! `--requests` calls are done, optionally paced to `--rate` calls per
//! second. With a rate, each call's latency counts from when it was
//! scheduled to start, not when it did, so a stalled server cannot hide
//! its stall (the "coordinated omission" wrk2 corrects for).
//!
//! With `--stream server|client|bidi` each call is a stream of the
//! method's kind (see `stream`): `--concurrency` streams in flight,
//! `--requests` streams, `--rate` streams opened per second, `--timeout`
//! over each whole stream; the summary adds messages per second and
//! per-message latencies. Streams still open when `--duration` is over are
//! cut and reported as unfinished.

mod engine;
mod grpc;
mod report;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier::{CallOptions, Channel, Code, Codec, MethodKind};

use crate::duration;

/// Options of `courier bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// The server: `host:port` or `courier://host:port` (courier's native
    /// protocol), `grpc://host:port` (gRPC).
    target: String,
    /// The method to call, `Service.Method` (e.g. `Calculator.Add`,
    /// `helloworld.Greeter.SayHello` or `helloworld.Greeter/SayHello`).
    #[arg(long, short = 'm')]
    method: String,
    /// Call over gRPC (same as a `grpc://` target).
    #[arg(long)]
    grpc: bool,
    /// gRPC: `.proto` files defining the method (default: ask the server's
    /// reflection service); repeatable.
    #[arg(long = "proto")]
    protos: Vec<PathBuf>,
    /// gRPC: where the `.proto` files' imports are found; repeatable
    /// (default: the current directory).
    #[arg(long = "import-path", short = 'I')]
    import_paths: Vec<PathBuf>,
    /// The arguments as JSON, e.g. `{"a":1,"b":2}`; `{}` for none. With
    /// `--stream client|bidi`: each request message, e.g. `"hello"`.
    #[arg(long, short = 'D', conflicts_with = "data_file", default_value = "{}")]
    data: String,
    /// Read the JSON arguments from a file.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Benchmark a streaming method of this kind. Each call is then a
    /// stream: --concurrency, --requests and --rate count streams, --timeout
    /// covers a whole stream, and the summary adds messages/s and
    /// per-message latencies.
    #[arg(long, value_enum, value_name = "KIND")]
    stream: Option<stream::StreamKind>,
    /// Requests per stream, for `--stream client|bidi` [default: 100].
    #[arg(long, requires = "stream")]
    messages: Option<u64>,
    /// Calls (streams) in flight at once, spread over the connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    concurrency: usize,
    /// Connections to open.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// How long to run (default 10s, unless --requests is given).
    #[arg(long, short = 'd', value_parser = duration::parse)]
    duration: Option<Duration>,
    /// How many calls (with --stream: streams) to make.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    requests: Option<u64>,
    /// Calls (with --stream: streams opened) per second, in total (0: as
    /// fast as the server answers).
    #[arg(long, short = 'r', default_value_t = 0)]
    rate: u64,
    /// Timeout of each call (with --stream: of each whole stream).
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
    #[error("the probe call to {method} failed, so no load was started: {status}{hint}")]
    Probe { method: String, status: courier::Status, hint: &'static str },
    #[error("--messages must be at least 1")]
    NoMessages,
    #[error(
        "--messages is for `--stream client` and `--stream bidi`: a server stream's one request is --data"
    )]
    MessagesOfServerStream,
    #[error("`{0}` is not a method name: use Service.Method (e.g. Calculator.Add)")]
    Method(String),
    #[error("the arguments do not fit {message}: {reason}")]
    Arguments { message: String, reason: String },
    #[error("reading the .proto files: {0}")]
    Proto(String),
    #[error("asking the server for its .proto files (reflection): {0}")]
    Reflection(String),
}

/// Requests per client or bidi stream unless `--messages` says otherwise.
const DEFAULT_MESSAGES: u64 = 100;

pub(crate) fn run(args: BenchArgs) -> Result<ExitCode, BenchError> {
    if args.concurrency == 0 || args.connections == 0 {
        return Err(BenchError::NoWorkers);
    }
    match (args.stream, args.messages) {
        (_, Some(0)) => return Err(BenchError::NoMessages),
        (Some(stream::StreamKind::Server), Some(_)) => return Err(BenchError::MessagesOfServerStream),
        _ => {}
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

async fn bench(mut args: BenchArgs, json: Bytes) -> Result<ExitCode, BenchError> {
    let (target, use_grpc) =
        match (args.target.strip_prefix("grpc://"), args.target.strip_prefix("courier://")) {
            (Some(grpc), _) => (grpc.to_owned(), true),
            (None, Some(native)) => (native.to_owned(), args.grpc),
            (None, None) => (args.target.clone(), args.grpc),
        };
    // Check the name before connecting: `KvGet` would otherwise reach the
    // server and come back as an unknown service named ``.
    let (service, method) =
        grpc::split_method(&args.method).ok_or_else(|| BenchError::Method(args.method.clone()))?;
    args.method = format!("{service}.{method}");
    let mut options = CallOptions::new().with_codec(Codec::Json).with_timeout(args.timeout);
    for (key, value) in &args.metadata {
        options = options.with_metadata(key, value.clone());
    }
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let builder = Channel::builder(target.clone());
        let builder = if use_grpc { builder.grpc() } else { builder };
        channels.push(builder.connect().await?);
    }
    let (body, encoding) = if use_grpc {
        let (service, method) =
            grpc::split_method(&args.method).ok_or_else(|| BenchError::Method(args.method.clone()))?;
        let sources = grpc::Sources { protos: args.protos.clone(), import_paths: args.import_paths.clone() };
        let kind = args.stream.map_or(MethodKind::Unary, stream::StreamKind::method_kind);
        let encoding = grpc::encoding(&channels[0], &sources, service, method, kind, &options).await?;
        options = options.with_codec(encoding.codec());
        (encoding.encode(&json)?, Some(encoding))
    } else {
        (json, None)
    };
    // One call first: a wrong method or arguments that do not fit should be
    // one clear error, not a million identical ones. Other failures (the
    // method's own errors, timeouts) are worth measuring, so the load runs.
    let probe = match args.stream {
        None => channels[0].unary_bytes(&args.method, body.clone(), &options).await.map(Some),
        Some(kind) => stream::probe(&channels[0], &args.method, kind, &body, &options, args.timeout).await,
    };
    let sample = match probe {
        Ok(Some(reply)) => encoding.as_ref().map_or_else(|| reply.clone(), |encoding| encoding.show(&reply)),
        Ok(None) => Bytes::from_static(b"(the probe stream ended cleanly without a reply)"),
        Err(status) if matches!(status.code(), Code::Unimplemented | Code::InvalidArgument) => {
            let hint = match (args.stream, status.message()) {
                (None, message) if message.contains("is a streaming method") => {
                    " (benchmark it with --stream server|client|bidi)"
                }
                (Some(_), message) if message.contains("is a unary method") => " (drop --stream)",
                _ => "",
            };
            return Err(BenchError::Probe { method: args.method.clone(), status, hint });
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
        stream: args.stream.map(|kind| stream::StreamPlan {
            kind,
            messages: args.messages.unwrap_or(DEFAULT_MESSAGES),
            timeout: args.timeout,
        }),
    };
    let plan_stream = plan.stream;
    let progress = report::Progress::new(&plan, args.quiet);
    let outcome = engine::run(channels, plan, Arc::clone(&progress.counters)).await;
    progress.finish();
    let ok = outcome.statuses.get(&Code::Ok).copied().unwrap_or(0);
    let shown = if use_grpc { format!("grpc://{target}") } else { target };
    report::print(&shown, &args.method, plan_stream, &outcome, &sample);
    // Streams cut at the end of the run (never ending by themselves) with
    // messages and no errors were a success too.
    let failed = outcome.total() - ok;
    let cut_cleanly = plan_stream.is_some() && failed == 0 && outcome.messages > 0;
    Ok(if ok == 0 && !cut_cleanly { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
