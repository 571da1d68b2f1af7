//! Faults injected for real into provider processes on test hosts of their
//! own (network namespaces on a bridge, see `courier_tests::netns`), with
//! the consumer and the registry in the test process on the bridge's
//! gateway address:
//! - one of three providers behind 10 % loss and 50 ± 40 ms of jitter;
//! - one `SIGSTOP`ped (it accepts connections, the kernel queues the
//!   bytes, nothing answers), then `SIGCONT`ed;
//! - one cut off by the firewall, then let back in;
//! - every provider failing, with a fallback configured;
//! - a chain of three hosts, A → B → C, for deadlines and cancellation.
//!
//! The consumer configures governance as a user would; what happened is
//! counted on the servers (over RPC to each provider process).

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier::resilience::{BreakerPolicy, BreakerState, Fallbacks, HedgeDelay, HedgingPolicy, RetryPolicy};
use courier::server::ServerHandle;
use courier::{Code, Status};
use courier_tests::{
    ChildServer, FlakyClient, FlakyMode, FlakyStats, HopClient, HopReport, Host, Impairment, Lab, eventually,
    start_registry_on, within,
};

const BINARY: &str = env!("CARGO_BIN_EXE_courier-test-server");
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// One test at a time: they measure latencies on a 2-core machine, and
/// each runs four or more processes of its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Providers of the test services, each on a host of its own, registered
/// in a registry the test runs on the lab's gateway.
struct Cluster {
    // Dropped in this order: the processes, then their hosts, then the lab.
    providers: Vec<ChildServer>,
    hosts: Vec<Host>,
    registry: courier::registry::Registry,
    _registry_server: ServerHandle,
    _lab: Lab,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// `n` providers with a registration lease of `ttl`.
    async fn start(n: usize, ttl: Duration) -> Cluster {
        let lab = Lab::new();
        let data = tempfile::tempdir().expect("registry data dir");
        let registry_server = start_registry_on(data.path(), (lab.gateway(), 0).into()).await;
        let url = format!("courier://{}", registry_server.local_addr());
        let registry = courier::registry::connect(&url).await.expect("registry");
        let hosts: Vec<Host> = (0..n).map(|_| lab.host()).collect();
        let ttl = ttl.as_millis().to_string();
        let providers = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let name = format!("p{i}");
                ChildServer::start_in(
                    &host.netns,
                    BINARY,
                    host.at(0),
                    &["--registry", &url, "--name", &name, "--ttl-ms", &ttl],
                )
            })
            .collect();
        Cluster { providers, hosts, registry, _registry_server: registry_server, _lab: lab, _data: data }
    }

    /// A client of provider `i` alone, for its counters and its mode.
    async fn direct(&self, i: usize) -> FlakyClient {
        FlakyClient::connect(self.providers[i].addr.to_string()).await.expect("connect to a provider")
    }

    /// What each provider ran so far.
    async fn stats(&self) -> Vec<FlakyStats> {
        let mut all = Vec::new();
        for i in 0..self.providers.len() {
            // Through the provider's link, faults and all: TCP retransmits.
            let direct = self.direct(i).await;
            all.push(direct.with_timeout(Duration::from_secs(20)).stats().await.expect("stats"));
        }
        all
    }

    /// The breaker state of provider `i` as `client` sees it.
    fn state(&self, client: &FlakyClient, i: usize) -> Option<BreakerState> {
        let addr = self.providers[i].addr.to_string();
        let report = client.channel().governance().expect("a governance report");
        report.instances.iter().find(|(_, at, _)| *at == addr).map(|(_, _, state)| *state)
    }
}

/// Wait until `client` sees `n` instances.
async fn sees(client: &FlakyClient, n: usize) {
    assert!(
        eventually(Duration::from_secs(10), || client.channel().instances().is_some_and(|i| i.len() == n))
            .await,
        "the client sees all {n} providers"
    );
}

/// Keep calling `client` (so breakers get their probes) until `condition`
/// holds or `timeout` passes; returns whether it held.
async fn calling_until(client: &FlakyClient, timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    let calls = async {
        for key in 0.. {
            let _ = client.get(key).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        held = eventually(timeout, condition) => held,
        () = calls => unreachable!("calls forever"),
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `calls` sequential gets, each answered with its key; sorted latencies.
async fn latencies(client: &FlakyClient, calls: u64) -> Vec<Duration> {
    let mut all = Vec::new();
    for key in 0..calls {
        let started = Instant::now();
        assert_eq!(client.get(key).await.expect("every call answered"), key);
        all.push(started.elapsed());
    }
    all.sort();
    all
}

/// Run `calls` calls of `call` from `callers` concurrent callers, keys
/// `0..calls`; the results by key.
async fn concurrently<F, Fut>(callers: u64, calls: u64, call: F) -> Vec<(u64, Result<u64, Status>)>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, Status>> + Send,
{
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for key in (caller..calls).step_by(callers as usize) {
                    results.push((key, call(key).await));
                }
                results
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a caller"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_loss_and_jitter_idempotent_calls_succeed_and_others_never_run_twice() {
    within(TEST_LIMIT, "loss and jitter", async {
        let _serial = ONE_AT_A_TIME.lock().await;
        // A long lease: the lossy provider stays registered, so the client
        // keeps meeting it and only its own governance can save the calls.
        let cluster = Cluster::start(3, Duration::from_secs(60)).await;
        cluster.hosts[0].impair(Impairment {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(40),
            loss_percent: 10.0,
        });
        // The fault is real: calls to that provider alone take a round
        // trip of about 100 ms (50 ms each way).
        let lossy = cluster.direct(0).await.with_timeout(Duration::from_secs(10));
        let mut direct = Vec::new();
        for key in 0..20 {
            let started = Instant::now();
            assert_eq!(lossy.get(key).await.expect("TCP retransmits what is lost"), key);
            direct.push(started.elapsed());
        }
        direct.sort();
        assert!(percentile(&direct, 0.5) >= Duration::from_millis(50), "no delay on the link: {direct:?}");
        // What a user would configure for a service with a 2 s deadline:
        // a per-attempt timeout well inside it, and a breaker that counts
        // slow calls; the budget is the default one.
        let governed = |breaker: BreakerPolicy| {
            FlakyClient::discover(&cluster.registry, "Flaky")
                .no_cache()
                .retry_policy(RetryPolicy::default().per_attempt_timeout(Duration::from_millis(250)))
                .breaker(breaker)
                .build()
        };
        let ejecting = governed(
            BreakerPolicy::default()
                .slow_call(Duration::from_millis(150))
                .open_for(Duration::from_millis(500), Duration::from_secs(2)),
        )
        .await
        .expect("discover");
        // And the worst case: no breaker, so every third call meets the
        // lossy provider and the retries alone must save it.
        let meeting = governed(BreakerPolicy::disabled()).await.expect("discover");
        for client in [&ejecting, &meeting] {
            sees(client, 3).await;
        }
        for (name, client, calls) in
            [("with breakers", &ejecting, 3000), ("without breakers", &meeting, 1500)]
        {
            let client = client.with_timeout(Duration::from_secs(2));
            let gets = concurrently(8, calls, move |key| {
                let client = client.clone();
                async move { client.get(key).await }
            })
            .await;
            let failed: Vec<_> =
                gets.iter().filter(|(key, result)| result.as_ref().ok() != Some(key)).collect();
            let success = 1.0 - failed.len() as f64 / calls as f64;
            eprintln!(
                "{name}: {} of {calls} idempotent calls failed ({:.2} % success)",
                failed.len(),
                success * 100.0
            );
            assert!(
                success >= 0.999,
                "{name}: {} of {calls} failed: {:?}",
                failed.len(),
                &failed[..failed.len().min(5)]
            );
        }
        let lossy_gets =
            cluster.direct(0).await.with_timeout(Duration::from_secs(20)).stats().await.expect("stats").gets;
        assert!(lossy_gets >= 300, "the lossy provider met its share of calls: {lossy_gets}");

        let puts = concurrently(8, 600, {
            let client = meeting.with_timeout(Duration::from_secs(2));
            move |key| {
                let client = client.clone();
                async move { client.put(key).await }
            }
        })
        .await;
        // Requests still crossing the lossy link land before the count.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stats = cluster.stats().await;
        let mut runs: HashMap<u64, usize> = HashMap::new();
        for key in stats.iter().flat_map(|s| s.puts.iter()) {
            *runs.entry(*key).or_default() += 1;
        }
        let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "non-idempotent calls ran more than once: {twice:?}");
        for (key, result) in &puts {
            if result.is_ok() {
                assert_eq!(runs.get(key), Some(&1), "put {key} answered but ran {:?} times", runs.get(key));
            }
        }
        let failed_puts = puts.iter().filter(|(_, result)| result.is_err()).count();
        eprintln!(
            "puts: {failed_puts} of 600 failed; executions per provider {:?}; gets per provider {:?}",
            stats.iter().map(|s| s.puts.len()).collect::<Vec<_>>(),
            stats.iter().map(|s| s.gets).collect::<Vec<_>>()
        );
        // The lossy provider ran its share of the puts: the test saw loss.
        assert!(stats[0].puts.len() >= 100, "{:?}", stats[0]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_provider_is_hedged_around_its_breaker_opens_and_closes_after_sigcont() {
    within(TEST_LIMIT, "SIGSTOP", async {
        let _serial = ONE_AT_A_TIME.lock().await;
        let cluster = Cluster::start(3, Duration::from_secs(60)).await;
        let delay = Duration::from_millis(25);
        let client: FlakyClient = FlakyClient::discover(&cluster.registry, "Flaky")
            .no_cache()
            .hedging(HedgingPolicy::new(HedgeDelay::Fixed(delay)))
            .breaker(BreakerPolicy::default().open_for(Duration::from_millis(500), Duration::from_secs(2)))
            .build()
            .await
            .expect("discover");
        sees(&client, 3).await;
        let healthy = latencies(&client, 300).await;
        let healthy_p99 = percentile(&healthy, 0.99);

        signal(cluster.providers[0].pid(), "STOP");
        let during = latencies(&client, 300).await;
        let during_p99 = percentile(&during, 0.99);
        eprintln!(
            "p99 healthy {healthy_p99:?}, with one provider stopped {during_p99:?} (hedging delay {delay:?})"
        );
        assert!(
            during_p99 <= delay + healthy_p99 + Duration::from_millis(15),
            "p99 {during_p99:?} against hedging delay {delay:?} + healthy p99 {healthy_p99:?}"
        );
        assert_eq!(cluster.state(&client, 0), Some(BreakerState::Open), "the stopped provider's breaker");

        signal(cluster.providers[0].pid(), "CONT");
        assert!(
            calling_until(&client, Duration::from_secs(10), || cluster.state(&client, 0)
                == Some(BreakerState::Closed))
            .await,
            "probes close the breaker after SIGCONT"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_cut_off_by_the_firewall_is_routed_around_and_used_again_once_healed() {
    within(TEST_LIMIT, "firewall", async {
        let _serial = ONE_AT_A_TIME.lock().await;
        let cluster = Cluster::start(3, Duration::from_secs(60)).await;
        let client: FlakyClient = FlakyClient::discover(&cluster.registry, "Flaky")
            .no_cache()
            .retry_policy(RetryPolicy::default().per_attempt_timeout(Duration::from_millis(100)))
            .breaker(BreakerPolicy::default().open_for(Duration::from_millis(500), Duration::from_secs(1)))
            .build()
            .await
            .expect("discover");
        sees(&client, 3).await;
        let client = client.with_timeout(Duration::from_secs(2));
        for key in 0..30 {
            assert_eq!(client.get(key).await.expect("all healthy"), key);
        }
        // Dropped, not refused: no RST, no ICMP; the connection just stalls.
        cluster.hosts[0].partition();
        let mut slowest = Duration::ZERO;
        for key in 0..200 {
            let started = Instant::now();
            assert_eq!(client.get(key).await.expect("retried around the partition"), key);
            slowest = slowest.max(started.elapsed());
        }
        assert!(slowest < Duration::from_millis(600), "a per-attempt timeout or two at most: {slowest:?}");
        assert_eq!(cluster.state(&client, 0), Some(BreakerState::Open), "the cut-off provider's breaker");
        let before = cluster.direct(1).await.stats().await.expect("stats").gets
            + cluster.direct(2).await.stats().await.expect("stats").gets;

        cluster.hosts[0].heal();
        assert!(
            calling_until(&client, Duration::from_secs(15), || cluster.state(&client, 0)
                == Some(BreakerState::Closed))
            .await,
            "probes close the breaker once the link is back"
        );
        let served_before = cluster.direct(0).await.stats().await.expect("stats").gets;
        for key in 0..60 {
            assert_eq!(client.get(key).await.expect("all healthy again"), key);
        }
        let served_after = cluster.direct(0).await.stats().await.expect("stats").gets;
        assert!(
            served_after >= served_before + 10,
            "it takes its share again: {served_before} → {served_after}"
        );
        assert!(before > 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_provider_fails_the_budget_bounds_the_load_and_the_fallback_answers() {
    within(TEST_LIMIT, "total outage", async {
        let _serial = ONE_AT_A_TIME.lock().await;
        let cluster = Cluster::start(3, Duration::from_secs(60)).await;
        for i in 0..3 {
            let mode = FlakyMode::Fail { code: Code::Unavailable as u32, pushback_ms: None };
            cluster.direct(i).await.set_mode(mode).await.expect("set the mode");
        }
        let before: u64 = cluster.stats().await.iter().map(|s| s.gets).sum();
        assert_eq!(before, 0);
        // The defaults (retry policy, budget, breakers), and a fallback.
        let fallbacks = Arc::new(Fallbacks::new().value("Flaky.Get", u64::MAX));
        let client: FlakyClient = FlakyClient::discover(&cluster.registry, "Flaky")
            .no_cache()
            .layer(fallbacks.clone())
            .build()
            .await
            .expect("discover");
        sees(&client, 3).await;
        let calls = 1000;
        let results = concurrently(4, calls, {
            let client = client.clone();
            move |key| {
                let client = client.clone();
                async move { client.get(key).await }
            }
        })
        .await;
        let fell_back = results.iter().filter(|(_, result)| result.as_ref().ok() == Some(&u64::MAX)).count();
        let other: Vec<_> =
            results.iter().filter(|(_, result)| result.as_ref().ok() != Some(&u64::MAX)).collect();
        assert!(
            other.is_empty(),
            "every call failed over to the fallback: {:?}",
            &other[..other.len().min(5)]
        );
        assert_eq!(fallbacks.served("Flaky.Get"), fell_back as u64, "one fallback per failed call");

        let attempts: u64 = cluster.stats().await.iter().map(|s| s.gets).sum();
        let amplification = attempts as f64 / calls as f64;
        eprintln!(
            "total outage: {attempts} attempts reached the servers for {calls} calls ({amplification:.2}x)"
        );
        assert!(amplification <= 1.2, "{attempts} attempts for {calls} calls");
        let report = client.channel().governance().expect("report");
        assert_eq!(report.methods, vec![("Flaky.Get".to_owned(), BreakerState::Open)], "{report:?}");
    })
    .await;
}

/// Three hosts, A → B → C, A to B over courier's protocol, B to C over
/// gRPC; the test calls A.
struct Chain {
    a: HopClient,
    hops: Vec<HopClient>,
    _servers: Vec<ChildServer>,
    _hosts: Vec<Host>,
    _lab: Lab,
}

async fn chain() -> Chain {
    let lab = Lab::new();
    let hosts: Vec<Host> = (0..3).map(|_| lab.host()).collect();
    let c = ChildServer::start_in(&hosts[2].netns, BINARY, hosts[2].at(0), &[]);
    let c_addr = c.addr.to_string();
    let b = ChildServer::start_in(&hosts[1].netns, BINARY, hosts[1].at(0), &["--relay-to-grpc", &c_addr]);
    let b_addr = b.addr.to_string();
    let a = ChildServer::start_in(&hosts[0].netns, BINARY, hosts[0].at(0), &["--relay-to", &b_addr]);
    let connect = |addr: String| async move { HopClient::connect(addr).await.expect("connect to a hop") };
    let hops = vec![connect(a.addr.to_string()).await, connect(b_addr).await, connect(c_addr).await];
    Chain { a: connect(a.addr.to_string()).await, hops, _servers: vec![a, b, c], _hosts: hosts, _lab: lab }
}

impl Chain {
    async fn reports(&self) -> Vec<HopReport> {
        let mut all = Vec::new();
        for hop in &self.hops {
            all.push(hop.report().await.expect("a hop's report"));
        }
        all
    }
}

fn micros_since_epoch(at: SystemTime) -> u64 {
    u64::try_from(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()).unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_three_hosts_the_deadline_reaches_the_last_hop_and_a_cancel_stops_every_hop() {
    within(TEST_LIMIT, "three hops", async {
        let _serial = ONE_AT_A_TIME.lock().await;
        let chain = chain().await;
        assert_eq!(chain.a.deadline_ms().await.expect("no deadline"), None, "none set, none arrives");
        let left = chain
            .a
            .with_timeout(Duration::from_millis(100))
            .deadline_ms()
            .await
            .expect("through three hops")
            .expect("C sees a deadline");
        assert!((50..=100).contains(&left), "C has {left} ms left of 100");

        // The last hop gives up when the first caller's deadline passes.
        let err = chain.a.with_timeout(Duration::from_millis(100)).sleep(5_000).await.expect_err("too slow");
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        let dropped =
            || async { chain.reports().await.iter().map(|r| r.dropped_at_micros.len()).collect::<Vec<_>>() };
        let deadline = Instant::now() + Duration::from_secs(5);
        while dropped().await != [1, 1, 1] && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(dropped().await, [1, 1, 1], "every hop dropped its handler at the deadline");

        // Cancelling the first call stops the work at every hop.
        let call = tokio::spawn({
            let a = chain.a.clone();
            async move { a.sleep(30_000).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while chain.reports().await[2].started < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(chain.reports().await[2].started, 2, "C is working on the second call");
        let cancelled = micros_since_epoch(SystemTime::now());
        call.abort();
        let deadline = Instant::now() + Duration::from_secs(5);
        while dropped().await != [2, 2, 2] && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let reports = chain.reports().await;
        for (hop, report) in ["A", "B", "C"].iter().zip(&reports) {
            let at = report.dropped_at_micros.get(1).copied().unwrap_or_else(|| panic!("{hop}: {report:?}"));
            let after = Duration::from_micros(at.saturating_sub(cancelled));
            eprintln!("{hop} stopped {after:?} after the cancel");
            assert!(after < Duration::from_millis(10), "{hop} stopped {after:?} after the cancel");
            assert_eq!(report.finished, 0, "{hop}: {report:?}");
        }
    })
    .await;
}
