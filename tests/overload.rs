//! A server at twice its capacity with the adaptive concurrency limit on:
//! it keeps its goodput, the calls it admits stay near the no-load latency,
//! the rest are shed at once with `ResourceExhausted` and a pushback, and a
//! retrying client does not pile retries onto it beyond its budget.
//!
//! The server runs in a process of its own on a test host (a network
//! namespace on a bridge); the callers are this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::Code;
use courier::resilience::{BreakerPolicy, RetryBudget, RetryPolicy};
use courier_tests::{ChildServer, Host, Lab, WorkClient, eventually, start_registry_on};

const BINARY: &str = env!("CARGO_BIN_EXE_courier-test-server");

const WORKERS: usize = 4;
const SERVICE_TIME: Duration = Duration::from_millis(10);

/// One test at a time: each measures latencies under load on a 2-core
/// machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pool's capacity, and the adaptive limit on, as server flags.
fn work_flags() -> Vec<String> {
    let flags =
        ["--work", &WORKERS.to_string(), "--work-ms", &SERVICE_TIME.as_millis().to_string(), "--adaptive"];
    flags.iter().map(|flag| (*flag).to_owned()).collect()
}

/// A `Work` server with `extra` flags on a host of its own.
fn server(lab: &Lab, extra: &[&str]) -> (ChildServer, Host) {
    let host = lab.host();
    let mut flags = work_flags();
    flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (ChildServer::start_in(&host.netns, BINARY, host.at(0), &flags), host)
}

/// Capacity in calls per second.
fn capacity() -> f64 {
    WORKERS as f64 / SERVICE_TIME.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Run {
    ok: Vec<Duration>,
    shed: Vec<Duration>,
    other: Vec<String>,
}

/// Calls a second `client` gets through with exactly as many callers as
/// the server has workers, each calling again as soon as answered.
async fn measure_capacity(client: &WorkClient) -> f64 {
    let length = Duration::from_secs(2);
    let callers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut done = 0u64;
                while start.elapsed() < length {
                    client.work(done).await.expect("within capacity");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await.expect("caller");
    }
    total as f64 / length.as_secs_f64()
}

/// Offer `rate` calls a second for `length`, open loop (a call starts on
/// schedule whatever the others are doing), through `client`; only calls
/// started after `settle` count (the limiter finds the capacity first).
async fn offer(client: &WorkClient, rate: f64, length: Duration, settle: Duration) -> Run {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let calls = ((length + settle).as_secs_f64() * rate) as u64;
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for n in 0..calls {
        tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
        let client = client.clone();
        let counts = start.elapsed() >= settle;
        handles.push((
            counts,
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client.work(n).await;
                (result.map_err(|s| (s.code(), s.to_string())), started.elapsed())
            }),
        ));
    }
    let mut run = Run { ok: Vec::new(), shed: Vec::new(), other: Vec::new() };
    for (counts, handle) in handles {
        let ended = handle.await.expect("the call task");
        if !counts {
            continue;
        }
        match ended {
            (Ok(_), took) => run.ok.push(took),
            (Err((Code::ResourceExhausted, _)), took) => run.shed.push(took),
            (Err((_, message)), _) => run.other.push(message),
        }
    }
    run.ok.sort();
    run.shed.sort();
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_twice_its_capacity_a_server_keeps_its_goodput_and_its_latency() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = Lab::new();
    let (server, _host) = server(&lab, &[]);
    let client = WorkClient::new(courier::Channel::connect(server.addr.to_string()).await.expect("connect"));

    // No load: a quarter of capacity.
    let quiet = offer(&client, capacity() / 4.0, Duration::from_secs(3), Duration::ZERO).await;
    assert!(quiet.shed.is_empty() && quiet.other.is_empty(), "nothing refused without load");
    let quiet_p99 = percentile(&quiet.ok, 0.99);

    // The capacity as this machine delivers it (timers round the service
    // time up), then twice that, for 6 s after 1 s to settle.
    let capacity = measure_capacity(&client).await;
    let length = Duration::from_secs(6);
    let busy = offer(&client, 2.0 * capacity, length, Duration::from_secs(1)).await;
    assert!(busy.other.is_empty(), "only sheds: {:?}", &busy.other[..busy.other.len().min(3)]);
    let goodput = busy.ok.len() as f64 / length.as_secs_f64();
    let busy_p99 = percentile(&busy.ok, 0.99);
    let shed_p99 = percentile(&busy.shed, 0.99);
    eprintln!(
        "capacity {capacity:.0}/s; goodput {goodput:.0}/s; p99 quiet {quiet_p99:?}, admitted {busy_p99:?}, shed {shed_p99:?}; {} shed",
        busy.shed.len()
    );
    assert!(goodput >= 0.9 * capacity, "goodput {goodput:.0}/s of {capacity:.0}/s");
    assert!(busy_p99 <= quiet_p99 * 2, "admitted p99 {busy_p99:?} against {quiet_p99:?} without load");
    assert!(!busy.shed.is_empty(), "the excess was shed");
    assert!(shed_p99 < SERVICE_TIME, "sheds fail fast: {shed_p99:?}");
    assert!(client.counts().await.expect("counts").shed > 0, "the server counted its sheds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_calls_are_retried_only_within_the_budget() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = Lab::new();
    let data = tempfile::tempdir().expect("registry data dir");
    let registry_server = start_registry_on(data.path(), (lab.gateway(), 0).into()).await;
    let url = format!("courier://{}", registry_server.local_addr());
    let registry = courier::registry::connect(&url).await.expect("registry");
    let initial = WORKERS.to_string();
    let (server, _host) = server(&lab, &["--registry", &url, "--name", "w", "--adaptive-initial", &initial]);
    // A client that retries sheds, on its one instance; breakers off so
    // every call is offered to the server.
    let client: WorkClient = WorkClient::discover(&registry, "Work")
        .no_cache()
        .breaker(BreakerPolicy::disabled())
        .method_breaker(BreakerPolicy::disabled())
        .retry_policy(RetryPolicy::default().max_attempts(5).retry_on([Code::ResourceExhausted]))
        .retry_budget(Arc::new(RetryBudget::new(0.2, 0, Duration::from_secs(10))))
        .build()
        .await
        .expect("discover");
    assert!(
        eventually(Duration::from_secs(5), || client.channel().instances().is_some_and(|i| i.len() == 1))
            .await
    );
    let busy = offer(&client, 3.0 * capacity(), Duration::from_secs(3), Duration::ZERO).await;
    let calls = (busy.ok.len() + busy.shed.len() + busy.other.len()) as u64;
    // Calls still running at the server end before the count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let direct = WorkClient::new(courier::Channel::connect(server.addr.to_string()).await.expect("connect"));
    let counts = direct.counts().await.expect("counts");
    let attempts = counts.done + counts.shed;
    eprintln!("{calls} calls, {attempts} attempts reached the server, {} shed", counts.shed);
    assert!(counts.shed > 0, "the server shed");
    assert!(attempts as f64 <= 1.2 * calls as f64 + 1.0, "{attempts} attempts for {calls} calls");
    let report = client.channel().governance().expect("report");
    assert!(report.pushbacks > 0 && report.budget_refusals > 0, "{report:?}");
}
