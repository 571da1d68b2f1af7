//! Faults injected into real provider processes: a provider `SIGSTOP`ped
//! (it accepts connections, the kernel queues the bytes, nothing answers)
//! while callers hedge around it; its breaker opens; after `SIGCONT` the
//! breaker's probes close it again.

use std::process::Command;
use std::time::{Duration, Instant};

use courier::resilience::{BreakerPolicy, BreakerState, HedgeDelay, HedgingPolicy};
use courier_tests::{ChildServer, FlakyClient, eventually, start_registry};

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_provider_is_hedged_around_its_breaker_opens_and_closes_after_sigcont() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry_handle = start_registry(dir.path()).await;
    let url = format!("courier://{}", registry_handle.local_addr());
    let registry = courier::registry::connect(&url).await.expect("registry");
    let binary = env!("CARGO_BIN_EXE_courier-test-server");
    // A long lease: a stopped provider stays registered, so the client
    // meets it and only its own governance can save the calls.
    let providers: Vec<ChildServer> = (0..3)
        .map(|n| {
            ChildServer::start_anywhere(
                binary,
                &["--registry", &url, "--name", &format!("p{n}"), "--ttl-ms", "60000"],
            )
        })
        .collect();
    let delay = Duration::from_millis(25);
    let client: FlakyClient = FlakyClient::discover(&registry, "Flaky")
        .no_cache()
        .hedging(HedgingPolicy::new(HedgeDelay::Fixed(delay)))
        .breaker(BreakerPolicy::default().open_for(Duration::from_millis(500), Duration::from_secs(2)))
        .build()
        .await
        .expect("discover");
    assert!(
        eventually(Duration::from_secs(5), || client.channel().instances().is_some_and(|i| i.len() == 3))
            .await
    );
    let healthy = latencies(&client, 300).await;
    let healthy_p99 = percentile(&healthy, 0.99);

    let stopped = &providers[0];
    let stopped_addr = stopped.addr.to_string();
    let state = |client: &FlakyClient| {
        let report = client.channel().governance().expect("report");
        report.instances.iter().find(|(_, addr, _)| *addr == stopped_addr).map(|(_, _, state)| *state)
    };
    signal(stopped.pid(), "STOP");
    let during = latencies(&client, 300).await;
    let during_p99 = percentile(&during, 0.99);
    eprintln!(
        "p99 healthy {healthy_p99:?}, with one provider stopped {during_p99:?} (hedging delay {delay:?})"
    );
    assert!(
        during_p99 <= delay + healthy_p99 + Duration::from_millis(15),
        "p99 {during_p99:?} against hedging delay {delay:?} + healthy p99 {healthy_p99:?}"
    );
    assert_eq!(state(&client), Some(BreakerState::Open), "the stopped provider's breaker is open");

    signal(stopped.pid(), "CONT");
    let closed = eventually(Duration::from_secs(10), || state(&client) == Some(BreakerState::Closed));
    let calls = async {
        for key in 0.. {
            let _ = client.get(key).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        closed = closed => assert!(closed, "probes close the breaker after SIGCONT"),
        () = calls => unreachable!(),
    }
}
