//! Governance on discovered channels, in one process over loopback: retry
//! policies (status codes, idempotency, pushback, per-attempt timeouts,
//! the attempt count in metadata), hedging, instance and method breakers,
//! the budget under a total outage, and fallbacks. The same faults across
//! real network namespaces are in `chaos.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::Code;
use courier::client::DiscoverBuilder;
use courier::registry::Registry;
use courier::resilience::{
    BreakerPolicy, BreakerState, Fallbacks, HedgeDelay, HedgingPolicy, RetryBudget, RetryPolicy,
};
use courier::server::ServerHandle;
use courier_tests::{FlakyClient, FlakyImpl, FlakyMode, FlakyServer, FlakyStats, eventually};

const UNAVAILABLE: u32 = Code::Unavailable as u32;

/// A provider of `Flaky` registered in `registry`, and its handle on the
/// service's mode and counters.
async fn provider(registry: &Registry) -> (ServerHandle, FlakyImpl) {
    let flaky = FlakyImpl::default();
    let handle = courier::Server::builder()
        .add_service(FlakyServer::new(flaky.clone()))
        .register_with(registry)
        .registration_ttl(Duration::from_secs(2))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start();
    (handle, flaky)
}

async fn providers(registry: &Registry, n: usize) -> Vec<(ServerHandle, FlakyImpl)> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(provider(registry).await);
    }
    all
}

async fn client(builder: DiscoverBuilder<FlakyClient>, instances: usize) -> FlakyClient {
    let client = builder.no_cache().build().await.expect("discover");
    assert!(
        eventually(Duration::from_secs(5), || client
            .channel()
            .instances()
            .is_some_and(|i| i.len() == instances))
        .await,
        "the client sees all {instances} instances"
    );
    client
}

fn total(stats: &[FlakyStats], of: impl Fn(&FlakyStats) -> u64) -> u64 {
    stats.iter().map(of).sum()
}

fn stats(providers: &[(ServerHandle, FlakyImpl)]) -> Vec<FlakyStats> {
    providers.iter().map(|(_, flaky)| flaky.snapshot()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_is_retried_around_for_idempotent_calls_only() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 3).await;
    all[0].1.set(FlakyMode::Fail { code: UNAVAILABLE, pushback_ms: None });
    // A breaker that never opens, so every call keeps meeting the failing
    // instance in turn and the retries are what saves it.
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky")
            .breaker(BreakerPolicy::disabled())
            .retry_budget(RetryBudget::new(1.0, 100, Duration::from_secs(10))),
        3,
    )
    .await;
    for key in 0..60 {
        assert_eq!(flaky.get(key).await.expect("an idempotent call is retried elsewhere"), key);
    }
    let (mut ok, mut failed) = (0, 0);
    for key in 1000..1060 {
        match flaky.put(key).await {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status}");
                failed += 1;
            }
        }
    }
    let seen = stats(&all);
    assert!(failed > 0 && ok > 0, "puts reaching the failing instance fail: {ok} ok, {failed} failed");
    let mut puts: Vec<u64> = seen.iter().flat_map(|s| s.puts.clone()).collect();
    let executed = puts.len();
    puts.sort_unstable();
    puts.dedup();
    assert_eq!(executed, puts.len(), "no put ran twice");
    assert_eq!(executed, 60, "each put ran exactly once");
    // Retries said so, and the failing instance never saw one of its own.
    assert!(total(&seen[1..], |s| s.retried) > 0, "retries carry the attempt count: {seen:?}");
    assert_eq!(total(&seen[1..], |s| s.max_previous), seen[1].max_previous + seen[2].max_previous);
    assert!(seen[1].max_previous.max(seen[2].max_previous) <= 2, "at most 3 attempts: {seen:?}");
    let report = flaky.channel().governance().expect("a discovered channel");
    assert!(report.retries >= 20, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_pushback_sets_the_delay_or_stops_the_retries() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 2).await;
    for (_, flaky) in &all {
        flaky.set(FlakyMode::Fail { code: UNAVAILABLE, pushback_ms: Some(300) });
    }
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky").breaker(BreakerPolicy::disabled()).retry_policy(
            RetryPolicy::default().max_attempts(2).backoff(
                Duration::from_millis(1),
                Duration::from_millis(1),
                1.0,
            ),
        ),
        2,
    )
    .await;
    let started = Instant::now();
    let err = flaky.get(1).await.expect_err("both instances fail");
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        took >= Duration::from_millis(300),
        "the retry waited for the pushback, not the 1 ms backoff: {took:?}"
    );
    assert_eq!(total(&stats(&all), |s| s.gets), 2, "two attempts");
    assert_eq!(flaky.channel().governance().map(|r| r.pushbacks), Some(1));

    // A negative pushback: no retry at all.
    for (_, flaky) in &all {
        flaky.set(FlakyMode::Fail { code: UNAVAILABLE, pushback_ms: Some(-1) });
    }
    let before = total(&stats(&all), |s| s.gets);
    let err = flaky.get(2).await.expect_err("failing");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(total(&stats(&all), |s| s.gets) - before, 1, "a negative pushback stops retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_instance_is_caught_by_the_per_attempt_timeout_and_its_breaker() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 3).await;
    all[0].1.set(FlakyMode::Hang);
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky")
            .retry_policy(RetryPolicy::default().per_attempt_timeout(Duration::from_millis(100)))
            .breaker(
                BreakerPolicy::default()
                    .consecutive_failures(3)
                    .open_for(Duration::from_millis(400), Duration::from_secs(2))
                    .probes(1, Duration::from_millis(200)),
            ),
        3,
    )
    .await;
    let mut slowest = Duration::ZERO;
    for key in 0..40 {
        let started = Instant::now();
        assert_eq!(flaky.get(key).await.expect("retried off the hung instance"), key);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(400), "one per-attempt timeout at most: {slowest:?}");
    let report = flaky.channel().governance().expect("report");
    let hung_addr = all[0].0.local_addr().to_string();
    let hung = report.instances.iter().find(|(_, addr, _)| *addr == hung_addr).expect("the hung instance");
    assert_eq!(hung.2, BreakerState::Open, "{report:?}");
    // While open the hung instance gets nothing: 3 failed attempts opened
    // it, then calls went elsewhere.
    assert!(all[0].1.snapshot().gets <= 4, "{:?}", all[0].1.snapshot());
    // A hung probe fails by its timeout and the breaker opens again
    // instead of sticking half-open.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for key in 0..5 {
        flaky.get(key).await.expect("served");
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let state = |flaky: &FlakyClient| {
        let report = flaky.channel().governance().expect("report");
        report.instances.iter().find(|(_, addr, _)| *addr == hung_addr).map(|(_, _, state)| *state)
    };
    assert_eq!(state(&flaky), Some(BreakerState::Open), "the hung probe reopened it");
    // Healthy again: the next probe closes it.
    all[0].1.set(FlakyMode::Healthy);
    let closed = eventually(Duration::from_secs(5), || state(&flaky) == Some(BreakerState::Closed));
    let calls = async {
        for key in 0.. {
            let _ = flaky.get(key).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        closed = closed => assert!(closed, "probes close the breaker once the instance answers"),
        () = calls => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_answers_from_the_fast_instance_and_cancels_the_slow_attempt() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 3).await;
    all[0].1.set(FlakyMode::Slow { millis: 1000 });
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky")
            .breaker(BreakerPolicy::disabled())
            .hedging(HedgingPolicy::new(HedgeDelay::Fixed(Duration::from_millis(30)))),
        3,
    )
    .await;
    let mut slowest = Duration::ZERO;
    for key in 0..30 {
        let started = Instant::now();
        assert_eq!(flaky.get(key).await.expect("answered"), key);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "the hedge answered first: {slowest:?}");
    let report = flaky.channel().governance().expect("report");
    assert!(report.hedges >= 5, "{report:?}");
    assert!(report.hedges <= 30, "only slow calls are hedged: {report:?}");
    // Non-idempotent calls are never hedged: one attempt, slow.
    let started = Instant::now();
    let mut slow_put = false;
    for key in 0..6 {
        flaky.put(key).await.expect("answered");
        slow_put |= started.elapsed() >= Duration::from_millis(900);
    }
    assert!(slow_put, "a put on the slow instance waits for it");
    let puts: usize = stats(&all).iter().map(|s| s.puts.len()).sum();
    assert_eq!(puts, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_total_outage_the_budget_bounds_the_load_and_fallbacks_answer() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 3).await;
    for (_, flaky) in &all {
        flaky.set(FlakyMode::Fail { code: UNAVAILABLE, pushback_ms: None });
    }
    let fallbacks = Arc::new(Fallbacks::new().value("Flaky.Get", u64::MAX));
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky")
            // No floor, so the share alone bounds the retries; breakers
            // left at their defaults.
            .retry_budget(RetryBudget::new(0.2, 0, Duration::from_secs(10)))
            .retry_policy(RetryPolicy::default().backoff(Duration::ZERO, Duration::ZERO, 1.0))
            .layer(fallbacks.clone()),
        3,
    )
    .await;
    let calls = 400u64;
    let mut answered_by_fallback = 0;
    for key in 0..calls {
        assert_eq!(flaky.get(key).await.expect("the fallback answers"), u64::MAX);
        answered_by_fallback += 1;
    }
    let attempts = total(&stats(&all), |s| s.gets);
    assert!(attempts as f64 <= 1.2 * calls as f64, "{attempts} attempts for {calls} calls");
    assert_eq!(fallbacks.served("Flaky.Get"), answered_by_fallback, "every failed call got the fallback");
    let report = flaky.channel().governance().expect("report");
    assert_eq!(report.methods, vec![("Flaky.Get".to_owned(), BreakerState::Open)], "{report:?}");
    assert!(report.breaker_refusals > 0, "{report:?}");
    // Far fewer attempts than calls once the breakers opened.
    assert!(attempts < calls, "{attempts} attempts for {calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_count_travels_over_grpc_too() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 2).await;
    all[0].1.set(FlakyMode::Fail { code: UNAVAILABLE, pushback_ms: None });
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky")
            .breaker(BreakerPolicy::disabled())
            .configure_channels(|c| c.grpc()),
        2,
    )
    .await;
    for key in 0..10 {
        flaky.get(key).await.expect("retried");
    }
    let seen = all[1].1.snapshot();
    assert!(seen.retried > 0 && seen.max_previous == 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hedging_a_hung_instance_is_hidden_from_callers_and_its_breaker_opens() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 3).await;
    all[0].1.set(FlakyMode::Hang);
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky")
            .hedging(HedgingPolicy::new(HedgeDelay::Fixed(Duration::from_millis(20))))
            .breaker(BreakerPolicy::default().open_for(Duration::from_millis(300), Duration::from_secs(1))),
        3,
    )
    .await;
    let hung_addr = all[0].0.local_addr().to_string();
    let state = |flaky: &FlakyClient| {
        let report = flaky.channel().governance().expect("report");
        report.instances.iter().find(|(_, addr, _)| *addr == hung_addr).map(|(_, _, state)| *state)
    };
    let mut slowest = Duration::ZERO;
    for key in 0..30 {
        let started = Instant::now();
        assert_eq!(flaky.get(key).await.expect("the hedge answers"), key);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(200), "hedged around the hung instance: {slowest:?}");
    assert_eq!(state(&flaky), Some(BreakerState::Open), "hedges lost to it count as slow calls");
    let hung_gets = all[0].1.snapshot().gets;
    assert!(hung_gets <= 6, "once open it gets no first attempts: {hung_gets}");
    all[0].1.set(FlakyMode::Healthy);
    let closed = eventually(Duration::from_secs(5), || state(&flaky) == Some(BreakerState::Closed));
    let calls = async {
        for key in 0.. {
            let _ = flaky.get(key).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        closed = closed => assert!(closed, "probes close it after the instance recovers"),
        () = calls => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_sheds_keeps_its_breaker_closed() {
    // Shedding is an overloaded instance protecting itself; opening its
    // breaker would pile its load onto the others.
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 1).await;
    all[0].1.set(FlakyMode::Fail { code: Code::ResourceExhausted as u32, pushback_ms: Some(-1) });
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky").breaker(BreakerPolicy::default().consecutive_failures(3)),
        1,
    )
    .await;
    for key in 0..30 {
        let error = flaky.get(key).await.expect_err("shed");
        assert_eq!(error.code(), Code::ResourceExhausted, "{error}");
    }
    let report = flaky.channel().governance().expect("report");
    assert_eq!(report.instances[0].2, BreakerState::Closed, "{report:?}");
    assert_eq!(
        all[0].1.snapshot().gets,
        30,
        "every call reached the instance, none was refused by its breaker"
    );
    all[0].1.set(FlakyMode::Healthy);
    assert_eq!(flaky.get(7).await.expect("served at once"), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_half_open_instance_takes_the_calls_its_probes_leave_out() {
    // One instance, its breaker half-open with its one probe in flight:
    // the other calls go to it anyway (forced) rather than fail with
    // "breakers are open", since nothing else could serve them.
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let all = providers(&registry, 1).await;
    all[0].1.set(FlakyMode::Fail { code: UNAVAILABLE, pushback_ms: Some(-1) });
    let flaky = client(
        FlakyClient::discover(&registry, "Flaky").method_breaker(BreakerPolicy::disabled()).breaker(
            BreakerPolicy::default()
                .consecutive_failures(3)
                .open_for(Duration::from_millis(100), Duration::from_millis(100))
                .probes(1, Duration::from_secs(2)),
        ),
        1,
    )
    .await;
    for key in 0..5 {
        flaky.get(key).await.expect_err("failing");
    }
    let state = |flaky: &FlakyClient| flaky.channel().governance().expect("report").instances[0].2;
    assert_eq!(state(&flaky), BreakerState::Open);
    all[0].1.set(FlakyMode::Slow { millis: 100 });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let calls: Vec<_> = (0..32u64)
        .map(|key| {
            let flaky = flaky.clone();
            tokio::spawn(async move { flaky.get(key).await })
        })
        .collect();
    for (key, call) in calls.into_iter().enumerate() {
        let answer = call.await.expect("joined").expect("served although the breaker was half-open");
        assert_eq!(answer, key as u64);
    }
    assert!(
        eventually(Duration::from_secs(3), || state(&flaky) == BreakerState::Closed).await,
        "its probe closed it"
    );
}
