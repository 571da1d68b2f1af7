//! Registration and discovery end to end: providers register, consumers
//! discover and balance, and everyone survives providers and the registry
//! going away.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier::Balance;
use courier::discovery::RegistryBackend;
use courier::registry::mem::LocalRegistry;
use courier::registry::{
    Instance, Lease, Registration, Registry, RegistryError, Revision, Snapshot, WatchStream,
};
use courier::service::BoxFuture;
use courier_tests::registry_flood::WatchFlood;
use courier_tests::routed as known;
use courier_tests::{
    ChildServer, Load, ProbeClient, Proxy, WhoamiClient, eventually, free_port, start_observed_provider,
    start_provider, start_registry, watch_smallest_view, within,
};

async fn connect(addr: SocketAddr) -> Registry {
    courier::registry::connect(&format!("courier://{addr}")).await.expect("connect to the registry")
}

async fn discover(registry: &Registry, balance: Balance) -> WhoamiClient {
    WhoamiClient::discover(registry, "Whoami").balance(balance).no_cache().build().await.expect("discover")
}

async fn shares(client: &WhoamiClient, calls: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..calls {
        *counts.entry(client.name().await.expect("call")).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_of_three_providers_a_third() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let _providers = [
        start_provider(&registry, "a", |b| b).await,
        start_provider(&registry, "b", |b| b).await,
        start_provider(&registry, "c", |b| b).await,
    ];
    let client = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 3).await, "three providers discovered");
    let counts = shares(&client, 3000).await;
    for name in ["a", "b", "c"] {
        let share = counts.get(name).copied().unwrap_or(0);
        assert!((910..=1090).contains(&share), "{name} got {share} of 3000 calls: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_two_three_give_one_two_three_sixths() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let _providers = [
        start_provider(&registry, "w1", |b| b.instance_weight(1)).await,
        start_provider(&registry, "w2", |b| b.instance_weight(2)).await,
        start_provider(&registry, "w3", |b| b.instance_weight(3)).await,
    ];
    let client = discover(&registry, Balance::WeightedRandom).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 3).await);
    let calls = 6000;
    let counts = shares(&client, calls).await;
    for (name, weight) in [("w1", 1.0), ("w2", 2.0), ("w3", 3.0)] {
        let share = counts.get(name).copied().unwrap_or(0) as f64 / calls as f64;
        let expected = weight / 6.0;
        assert!(
            (share - expected).abs() <= 0.03,
            "{name}: share {share:.3}, expected {expected:.3} ({counts:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_provider_vanishes_within_ttl_plus_one_second_for_every_consumer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry_handle = start_registry(dir.path()).await;
    let url = format!("courier://{}", registry_handle.local_addr());
    let registry = connect(registry_handle.local_addr()).await;
    let _stays = start_provider(&registry, "stays", |b| b).await;
    let child = ChildServer::start_anywhere(
        env!("CARGO_BIN_EXE_courier-test-server"),
        &["--registry", &url, "--name", "doomed", "--ttl-ms", "2000"],
    );
    let consumers = [discover(&registry, Balance::RoundRobin).await, discover(&registry, Balance::P2c).await];
    for consumer in &consumers {
        assert!(
            eventually(Duration::from_secs(5), || known(consumer) == 2).await,
            "both providers discovered"
        );
    }

    let killed_at = Instant::now();
    child.kill();
    for consumer in &consumers {
        assert!(
            eventually(Duration::from_secs(4), || known(consumer) == 1).await,
            "the killed provider disappeared"
        );
    }
    let gone_after = killed_at.elapsed();
    assert!(gone_after <= Duration::from_secs(3), "gone after {gone_after:?} (TTL 2 s + 1 s)");
    // And calls only reach the survivor.
    assert_eq!(consumers[0].name().await.expect("call"), "stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_server_stops_renewing_its_lease_and_expires() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let aborted = start_provider(&registry, "aborted", |b| b).await;
    let client = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await);
    aborted.abort();
    assert!(
        eventually(Duration::from_secs(4), || known(&client) == 0).await,
        "no orphaned task keeps renewing the lease of a server that is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_disappears_at_once_and_fails_no_call() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let leaving = start_provider(&registry, "leaving", |b| b).await;
    let _staying = start_provider(&registry, "staying", |b| b).await;
    let client = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await);

    let load = Load::start(&client, 8);
    // Calls are flowing before the stop, and go on flowing after it.
    assert!(load.wait_for_calls(100).await, "calls flow before the stop");
    let stopping = Instant::now();
    leaving.shutdown().await.expect("graceful shutdown");
    assert!(eventually(Duration::from_secs(1), || known(&client) == 1).await, "gone as soon as it stopped");
    let stopped_in = stopping.elapsed();
    assert!(load.wait_for_calls(load.calls() + 100).await, "calls flow after the stop");
    let (calls, failures) = load.finish().await;
    assert_eq!(failures, 0, "no call failed during the graceful stop");
    eprintln!("graceful stop: {calls} calls, gone from the consumer {stopped_in:?} after the stop began");
    assert!(stopped_in < Duration::from_secs(2), "{stopped_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_registry_under_load_fails_nothing_and_removes_nothing() {
    let binary = env!("CARGO_BIN_EXE_courier-test-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let registry_process = ChildServer::start_anywhere(binary, &["--registry-data", &data]);
    // Restarted on the port it actually bound, so clients find it again.
    let addr = registry_process.addr;
    let registry = connect(addr).await;
    let _providers =
        [start_provider(&registry, "p1", |b| b).await, start_provider(&registry, "p2", |b| b).await];
    let client = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await);

    let load = Load::start(&client, 4);
    let (stop_watching, smallest) = watch_smallest_view(&client);
    assert!(load.wait_for_calls(50).await, "calls flow before the registry is killed");
    registry_process.kill(); // SIGKILL
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _restarted = ChildServer::start_with(binary, addr, &["--registry-data", &data]);
    // Past a TTL after the restart: providers must have renewed their leases.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (calls, failures) = load.finish().await;
    stop_watching.store(true, Ordering::SeqCst);
    let smallest = within(Duration::from_secs(5), "the view watcher", smallest).await.expect("watcher");

    assert_eq!(failures, 0, "no call failed");
    assert!(calls > 200, "calls kept flowing: {calls}");
    assert_eq!(smallest, 2, "the consumer never saw an instance removed");
    let listed = registry.list("Whoami").await.expect("the restarted registry answers");
    assert_eq!(listed.instances.len(), 2, "both providers are still registered after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cut_off_from_the_registry_keeps_calling_and_catches_up_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry_handle = start_registry(dir.path()).await;
    let direct = connect(registry_handle.local_addr()).await;
    // The consumer reaches the registry through a proxy we can cut.
    let proxy = Proxy::start(registry_handle.local_addr()).await;
    let through_proxy = connect(proxy.addr).await;
    let first = start_provider(&direct, "first", |b| b).await;
    let second = start_provider(&direct, "second", |b| b).await;
    let client = discover(&through_proxy, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await);

    let load = Load::start(&client, 4);
    proxy.block();
    // Meanwhile, on the other side of the partition: one provider leaves,
    // another arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.shutdown().await.expect("graceful shutdown");
    let third = start_provider(&direct, "third", |b| b).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = load.calls();
    let stale: BTreeSet<String> =
        client.channel().instances().unwrap_or_default().into_iter().map(|i: Instance| i.addr).collect();
    proxy.unblock();

    let expected = BTreeSet::from([second.local_addr().to_string(), third.local_addr().to_string()]);
    let converged = eventually(Duration::from_secs(6), || {
        let now: BTreeSet<String> =
            client.channel().instances().unwrap_or_default().into_iter().map(|i: Instance| i.addr).collect();
        now == expected
    })
    .await;
    let (_, failures) = load.finish().await;
    assert_eq!(failures, 0, "no call failed while the registry was unreachable");
    assert!(during > 500, "calls kept flowing during the partition: {during}");
    assert_ne!(stale, expected, "during the partition the consumer could not know");
    assert!(converged, "the changes made during the partition reached the consumer");
    let reached: BTreeSet<String> = shares(&client, 60).await.into_keys().collect();
    assert_eq!(reached, BTreeSet::from(["second".to_owned(), "third".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_starting_while_the_registry_is_down_uses_its_cache_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = tempfile::tempdir().expect("cache dir");
    let registry_handle = start_registry(dir.path()).await;
    let registry = connect(registry_handle.local_addr()).await;
    let _provider = start_provider(&registry, "cached", |b| b).await;
    {
        let client = WhoamiClient::discover(&registry, "Whoami")
            .cache_dir(cache.path())
            .build()
            .await
            .expect("discover");
        assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await);
        assert_eq!(client.name().await.expect("call"), "cached");
    }
    registry_handle.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let client = WhoamiClient::discover(&registry, "Whoami")
        .cache_dir(cache.path())
        .build()
        .await
        .expect("builds while the registry is down");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(client.name().await.expect("served from the cached instance"), "cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_instances_and_no_registry_calls_fail_with_a_clear_reason() {
    let port = free_port();
    let registry = courier::registry::connect(&format!("courier://127.0.0.1:{port}")).await.expect("lazy");
    let client = WhoamiClient::discover(&registry, "Whoami")
        .no_cache()
        .initial_wait(Duration::from_millis(500))
        .build()
        .await
        .expect("builds");
    let err = client.name().await.expect_err("nothing is known");
    assert_eq!(err.code(), courier::Code::Unavailable);
    assert!(err.message().contains("no instance of Whoami"), "{err}");
    assert!(err.message().contains("registry is unreachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_preferences_choose_instances() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let _providers = [
        start_provider(&registry, "near", |b| b.instance_zone("z1")).await,
        start_provider(&registry, "far", |b| b.instance_zone("z2")).await,
    ];
    let near =
        WhoamiClient::discover(&registry, "Whoami").zone("z1").no_cache().build().await.expect("discover");
    assert!(eventually(Duration::from_secs(5), || known(&near) == 2).await);
    let reached: BTreeSet<String> = shares(&near, 20).await.into_keys().collect();
    assert_eq!(reached, BTreeSet::from(["near".to_owned()]), "the consumer's zone first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_requirement_reaches_only_the_instances_that_meet_it() {
    // Servers register their services' own version (1.0.0 for Whoami), so
    // the 1.x and 2.x instances are registered by hand, pointing at
    // servers that registered nowhere that matters.
    let elsewhere = courier::registry::connect("mem://").await.expect("registry");
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let (v1, v2) =
        (start_provider(&elsewhere, "v1", |b| b).await, start_provider(&elsewhere, "v2", |b| b).await);
    let ttl = Duration::from_secs(300);
    let by_hand = |server: &courier::ServerHandle, version: &str| {
        Instance::new("Whoami", server.local_addr().to_string()).with_version(version)
    };
    let _leases = [
        registry.register(by_hand(&v1, "1.4.2"), ttl).await.expect("register 1.4.2"),
        registry.register(by_hand(&v2, "2.1.0"), ttl).await.expect("register 2.1.0"),
    ];
    let reached = async |requirement: &str| -> BTreeSet<String> {
        let client = WhoamiClient::discover(&registry, "Whoami")
            .version(requirement)
            .no_cache()
            .build()
            .await
            .expect("discover");
        assert!(
            eventually(Duration::from_secs(5), || known(&client) == 1).await,
            "{requirement}: one instance of the two ({} known)",
            known(&client)
        );
        shares(&client, 20).await.into_keys().collect()
    };
    assert_eq!(reached("^1").await, BTreeSet::from(["v1".to_owned()]), "^1 reaches 1.4.2 only");
    assert_eq!(reached("^2").await, BTreeSet::from(["v2".to_owned()]), "^2 reaches 2.1.0 only");
    assert_eq!(reached(">=1.4, <2").await, BTreeSet::from(["v1".to_owned()]), "a range");

    // Nothing meets ^3: the consumer knows the service but routes nowhere.
    let none = WhoamiClient::discover(&registry, "Whoami")
        .version("^3")
        .no_cache()
        .initial_wait(Duration::from_secs(5))
        .build()
        .await
        .expect("discover");
    assert_eq!(known(&none), 0, "no instance is version 3");
    let err = none.name().await.expect_err("no instance meets ^3");
    assert_eq!(err.code(), courier::Code::Unavailable, "{err}");

    // A requirement that does not parse is refused by name.
    match WhoamiClient::discover(&registry, "Whoami").version("not a version").build().await {
        Err(courier::client::DiscoverError::InvalidVersion { requirement, reason }) => {
            assert_eq!(requirement, "not a version");
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("expected InvalidVersion, got {other:?}"),
        Ok(_) => panic!("`not a version` must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_in_the_consumers_zone_fails_over_to_another_zone() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let _far = start_provider(&registry, "far", |b| b.instance_zone("z2")).await;
    // Registered in the consumer's zone, but nothing listens there (a
    // crashed provider whose lease has not expired yet).
    let dead = Instance::new("Whoami", format!("127.0.0.1:{}", free_port())).with_zone("z1");
    let _lease = registry.register(dead, Duration::from_secs(60)).await.expect("register");
    let client =
        WhoamiClient::discover(&registry, "Whoami").zone("z1").no_cache().build().await.expect("discover");
    assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await);
    let reached = shares(&client, 50).await;
    assert_eq!(reached.get("far"), Some(&50), "every call fails over: {reached:?}");
}

/// A backend over a [`LocalRegistry`] that lets a test see when the last
/// handle to it is gone, and make lease renewals hang.
struct Tracked {
    inner: LocalRegistry,
    _alive: Arc<()>,
    /// Renewals of `Whoami` leases still to hang (forever) before they work
    /// again.
    hang_renewals: Arc<AtomicUsize>,
}

/// A registry over `local` through [`Tracked`]: the registry, its liveness
/// token, and the count of renewals to hang.
fn tracked(local: &LocalRegistry) -> (Registry, Arc<()>, Arc<AtomicUsize>) {
    let alive = Arc::new(());
    let hang_renewals = Arc::new(AtomicUsize::new(0));
    let backend =
        Tracked { inner: local.clone(), _alive: alive.clone(), hang_renewals: hang_renewals.clone() };
    (Registry::from_backend("mem://tracked", backend), alive, hang_renewals)
}

type Answer<'a, T> = BoxFuture<'a, Result<T, RegistryError>>;

impl RegistryBackend for Tracked {
    fn register(&self, instance: Instance, ttl: Duration) -> Answer<'_, Lease> {
        RegistryBackend::register(&self.inner, instance, ttl)
    }
    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> Answer<'a, ()> {
        let hang = lease.service == "Whoami"
            && self
                .hang_renewals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            RegistryBackend::keep_alive(&self.inner, lease).await
        })
    }
    fn deregister<'a>(&'a self, lease: &'a Lease) -> Answer<'a, ()> {
        RegistryBackend::deregister(&self.inner, lease)
    }
    fn list<'a>(&'a self, service: &'a str) -> Answer<'a, Snapshot> {
        RegistryBackend::list(&self.inner, service)
    }
    fn watch<'a>(&'a self, service: &'a str, after: Option<Revision>) -> Answer<'a, WatchStream> {
        RegistryBackend::watch(&self.inner, service, after)
    }
    fn registrations<'a>(&'a self, service: Option<&'a str>) -> Answer<'a, Vec<Registration>> {
        RegistryBackend::registrations(&self.inner, service)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_discovered_client_ends_its_discovery_task() {
    let local = LocalRegistry::new();
    let provider_registry = Registry::from_backend("mem://", local.clone());
    let _provider = start_provider(&provider_registry, "a", |b| b).await;
    // The consumer's own handle: its backend is dropped once no handle is left.
    let (registry, alive, _) = tracked(&local);
    let client = discover(&registry, Balance::RoundRobin).await;
    drop(registry);
    assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await);
    assert_eq!(client.name().await.expect("call"), "a");
    assert_eq!(Arc::strong_count(&alive), 2, "the discovery task holds the registry");
    // The watch now sees no events: the task must still notice the drop.
    drop(client);
    assert!(
        eventually(Duration::from_secs(5), || Arc::strong_count(&alive) == 1).await,
        "the discovery task let go of the registry"
    );
}

/// The leases `Whoami` instances are registered under in `local`.
fn whoami_leases(local: &LocalRegistry) -> Vec<u64> {
    local.registrations(Some("Whoami")).iter().map(|r| r.lease).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_never_answers_costs_at_most_one_lease() {
    let local = LocalRegistry::new();
    let (registry, _, hang_renewals) = tracked(&local);
    hang_renewals.store(1, Ordering::SeqCst);
    let _provider = start_provider(&registry, "a", |b| b.registration_ttl(Duration::from_secs(1))).await;
    assert!(eventually(Duration::from_secs(2), || whoami_leases(&local).len() == 1).await, "registered");
    let first = whoami_leases(&local);
    // The first renewal hangs: the task gives up on it when the lease runs
    // out, and registers again.
    let again = eventually(Duration::from_secs(4), || {
        let now = whoami_leases(&local);
        now.len() == 1 && now != first
    })
    .await;
    assert!(again, "registered again under a new lease: {:?}", whoami_leases(&local));
    assert_eq!(hang_renewals.load(Ordering::SeqCst), 0, "the renewal did hang");
    let second = whoami_leases(&local);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(whoami_leases(&local), second, "the new lease is renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_deregisters_even_while_a_renewal_hangs() {
    let local = LocalRegistry::new();
    let (registry, _, hang_renewals) = tracked(&local);
    hang_renewals.store(usize::MAX, Ordering::SeqCst);
    let provider = start_provider(&registry, "a", |b| b.registration_ttl(Duration::from_secs(3))).await;
    // The first renewal is due after a second; it is hanging by now.
    assert!(eventually(Duration::from_secs(2), || whoami_leases(&local).len() == 1).await, "registered");
    let hanging =
        eventually(Duration::from_secs(3), || hang_renewals.load(Ordering::SeqCst) == usize::MAX - 1).await;
    assert!(hanging, "a renewal is in flight (hanging)");
    assert_eq!(whoami_leases(&local).len(), 1);
    let started = Instant::now();
    provider.shutdown().await.expect("graceful shutdown");
    assert!(started.elapsed() < Duration::from_secs(1), "the stop took {:?}", started.elapsed());
    // The lease had well over a second left: only deregistering removes it.
    assert!(whoami_leases(&local).is_empty(), "deregistered at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_instances_and_a_watcher_that_sees_a_change_quickly() {
    let binary = env!("CARGO_BIN_EXE_courier-test-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let registry_process = ChildServer::start_anywhere(binary, &["--registry-data", &data]);
    let registry = connect(registry_process.addr).await;
    let rss_before = registry_process.rss_kib();

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..32)
        .map(|_| {
            let (registry, next) = (registry.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= 10_000 {
                        return;
                    }
                    let instance = Instance::new(
                        format!("Scale{}", n % 100),
                        format!("10.0.{}.{}:9000", n / 250, n % 250),
                    )
                    .with_version("1.0.0");
                    registry.register(instance, Duration::from_secs(300)).await.expect("register");
                }
            })
        })
        .collect();
    for writer in writers {
        within(Duration::from_secs(120), "the writers", writer).await.expect("writer");
    }
    let registering = started.elapsed();
    let rss_after = registry_process.rss_kib();
    assert_eq!(registry.list("Scale42").await.expect("list").instances.len(), 100);

    // A watcher of one service sees a new instance of it quickly.
    let mut watch = registry.watch("Scale42", None).await.expect("watch");
    let first =
        within(Duration::from_secs(10), "the Reset", watch.next()).await.expect("reset").expect("no error");
    assert!(
        matches!(first, courier::registry::WatchEvent::Reset { ref instances, .. } if instances.len() == 100)
    );
    let mut latencies = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        registry
            .register(
                Instance::new("Scale42", format!("10.1.0.{i}:9000")).with_version("1.0.0"),
                Duration::from_secs(300),
            )
            .await
            .expect("register");
        let event = tokio::time::timeout(Duration::from_secs(2), watch.next())
            .await
            .expect("an event")
            .expect("open");
        assert!(matches!(event, Ok(courier::registry::WatchEvent::Add { .. })), "{event:?}");
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    eprintln!(
        "10,000 instances in 100 services: registered in {registering:?} ({:.0}/s); registry memory {} KiB -> {} KiB \
         ({:.1} KiB per instance); watch latency median {median:?}, worst {worst:?}",
        10_000.0 / registering.as_secs_f64(),
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before) as f64 / 10_000.0
    );
    // The figure is printed above (and in docs/PERFORMANCE.md); this only
    // catches a watcher that is not woken (left to its 10 s long poll).
    assert!(worst < Duration::from_secs(1), "a watcher saw the change after {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_crashing_mid_call_fails_only_the_calls_that_are_not_idempotent() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let (first, first_state) = start_observed_provider(&registry, "first", |b| b).await;
    let (_second, second_state) = start_observed_provider(&registry, "second", |b| b).await;
    let probe = ProbeClient::discover(&registry, "Probe").no_cache().build().await.expect("discover");
    assert!(
        eventually(Duration::from_secs(5), || probe.channel().instances().is_some_and(|i| i.len() == 2))
            .await
    );
    // Of 8 slow non-idempotent calls, about half run on `first` when it dies
    // (the sleeps are long enough to be running still on a loaded machine).
    let idempotent: Vec<_> = (0..8).map(|i| probe.spawn_slow_echo(format!("call {i}"), 3000)).collect();
    let plain: Vec<_> = (0..8).map(|_| probe.spawn_sleep(3000)).collect();
    let all_running =
        eventually(Duration::from_secs(5), || first_state.started() + second_state.started() == 8).await;
    assert!(all_running, "8 calls running: {} + {}", first_state.started(), second_state.started());
    let on_first = first_state.started();
    assert!(on_first > 0, "some calls run on `first`");
    assert_eq!(first_state.finished(), 0, "none finished before the crash");
    first.abort();
    for (i, call) in idempotent.into_iter().enumerate() {
        assert_eq!(call.await.expect("an idempotent call moves to the survivor"), format!("call {i}"));
    }
    let mut lost = 0;
    for call in plain {
        match call.await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), courier::Code::Unavailable, "{status}");
                lost += 1;
            }
        }
    }
    // Each call running on `first` when it died may have had its effect:
    // it fails rather than being run again on the survivor; the rest succeed.
    assert_eq!(lost, on_first, "a call that may have run is not silently run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_call_that_reached_a_server_draws_on_the_retry_budget() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let (first, _) = start_observed_provider(&registry, "first", |b| b).await;
    let (_second, _) = start_observed_provider(&registry, "second", |b| b).await;
    // A budget with nothing in it: no call that may have reached a server
    // is sent again.
    let probe = ProbeClient::discover(&registry, "Probe")
        .no_cache()
        .balance(Balance::RoundRobin)
        .retry_budget(courier::resilience::RetryBudget::none())
        .build()
        .await
        .expect("discover");
    assert!(
        eventually(Duration::from_secs(5), || probe.channel().instances().is_some_and(|i| i.len() == 2))
            .await
    );
    let calls: Vec<_> = (0..8).map(|i| probe.spawn_slow_echo(format!("call {i}"), 3000)).collect();
    // Round robin: four are running on `first` when it dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.abort();
    let (mut answered, mut refused) = (0, 0);
    for call in calls {
        match call.await {
            Ok(_) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), courier::Code::Unavailable, "{status}");
                assert!(status.message().contains("retry budget of Probe is spent"), "{status}");
                refused += 1;
            }
        }
    }
    assert_eq!((answered, refused), (4, 4), "the calls on `second` answer; those on `first` are not retried");
    // Calls that reach nobody still move on for free: the dead instance is
    // skipped.
    assert_eq!(probe.slow_echo("after".into(), 0).await.expect("moves to the survivor"), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_sends_equal_keys_to_the_same_instance() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let _providers = [
        start_provider(&registry, "h1", |b| b).await,
        start_provider(&registry, "h2", |b| b).await,
        start_provider(&registry, "h3", |b| b).await,
    ];
    let client = discover(&registry, Balance::ConsistentHash).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 3).await);
    let mut owners = HashMap::new();
    for user in 0..60 {
        let keyed = client.with_hash_key(format!("user-{user}"));
        let first = keyed.name().await.expect("call");
        for _ in 0..5 {
            assert_eq!(keyed.name().await.expect("call"), first, "user-{user} moved");
        }
        *owners.entry(first).or_insert(0) += 1;
    }
    assert_eq!(owners.len(), 3, "keys spread over every instance: {owners:?}");
}

/// The lease ids of the `Whoami` instances, sorted.
async fn lease_ids(registry: &Registry) -> Vec<u64> {
    let registrations = tokio::time::timeout(Duration::from_secs(10), registry.registrations(Some("Whoami")))
        .await
        .expect("registrations within 10 s")
        .expect("registrations");
    let mut leases: Vec<u64> = registrations.iter().map(|r| r.lease).collect();
    leases.sort_unstable();
    leases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_flood_costs_no_lease_and_fails_no_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry_handle = start_registry(dir.path()).await;
    let addr = registry_handle.local_addr();
    let registry = connect(addr).await;
    let _providers = [
        start_provider(&registry, "p1", |b| b).await,
        start_provider(&registry, "p2", |b| b).await,
        start_provider(&registry, "p3", |b| b).await,
    ];
    let consumer = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&consumer) == 3).await, "three providers discovered");
    let leases = lease_ids(&registry).await;
    assert_eq!(leases.len(), 3);
    let load = Load::start(&consumer, 2);
    let (stop_watching, smallest) = watch_smallest_view(&consumer);

    // The flood: 11 connections with 1,000 watches each, more than
    // the server's 10,000 shared concurrency slots.
    let flood = WatchFlood::start(addr, 11, 1000).await;
    assert!(
        eventually(Duration::from_secs(30), || flood.refused() >= 11 * 500).await,
        "the flood is refused beyond its share: {} refused",
        flood.refused()
    );
    let flooded_at = Instant::now();

    // While it lasts: a new consumer discovers the service, and registry
    // calls answer.
    let newcomer = discover(&registry, Balance::RoundRobin).await;
    let discovered = eventually(Duration::from_secs(10), || known(&newcomer) == 3).await;
    let started = Instant::now();
    let registry_calls: Result<(), RegistryError> = async {
        let extra =
            registry.register(Instance::new("Other", "127.0.0.1:7999"), Duration::from_secs(30)).await?;
        registry.list("Whoami").await?;
        registry.deregister(&extra).await
    }
    .await;
    let registry_calls_took = started.elapsed();
    // Hold the flood for well over two TTLs (2 s): renewals must get through.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(flooded_at.elapsed())).await;
    // Held by the server: outstanding for over a second (a refusal comes
    // back in milliseconds; a held long poll stays for its whole wait).
    let held = flood.held_for(Duration::from_secs(1));
    let (refused, failed) = (flood.refused(), flood.failed());
    flood.stop();

    let leases_after = lease_ids(&registry).await;
    let (calls, failures) = load.finish().await;
    stop_watching.store(true, Ordering::SeqCst);
    let smallest = within(Duration::from_secs(5), "the view watcher", smallest).await.expect("watcher");
    eprintln!(
        "watch flood (11 x 1,000): {held} watches held, {refused} refused, {failed} failed otherwise; \
         leases lost: {}; consumer calls: {calls}, failed: {failures}; smallest view: {smallest}; \
         register + list + deregister during the flood: {registry_calls:?} in {registry_calls_took:?}; \
         a new consumer discovered every provider: {discovered}",
        leases.iter().filter(|lease| !leases_after.contains(lease)).count()
    );
    assert_eq!(registry_calls, Ok(()), "registry calls work during the flood");
    assert!(discovered, "a consumer starting during the flood discovers every provider");
    assert_eq!(leases_after, leases, "no provider lost its lease (none registered again)");
    assert_eq!(failures, 0, "no call failed");
    assert!(calls > 100, "calls kept flowing: {calls}");
    assert_eq!(smallest, 3, "the consumer never lost an instance");
    assert_eq!(failed, 0, "the flood's watches were refused, not failed otherwise");
    assert!(held <= 11 * 256, "at most 256 watches per connection: {held} held");
    assert!(held >= 256, "the flood's watches are held (up to 256 a connection): {held} held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_watch_is_refused_keeps_its_instances_and_catches_up_later() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = tempfile::tempdir().expect("cache dir");
    // Room for four watches in all.
    let server = courier_registry::open(dir.path())
        .await
        .expect("open registry")
        .watch_limit(courier::MethodLimit::new(4))
        .add_to(courier::Server::builder())
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start();
    let registry = connect(server.local_addr()).await;
    let _first = start_provider(&registry, "first", |b| b).await;
    {
        let earlier = WhoamiClient::discover(&registry, "Whoami").cache_dir(cache.path()).build().await;
        let earlier = earlier.expect("discover");
        assert!(eventually(Duration::from_secs(5), || known(&earlier) == 1).await);
    }
    // Someone holds every watch slot.
    let flood = WatchFlood::start(server.local_addr(), 1, 8).await;
    assert!(
        eventually(Duration::from_secs(10), || flood.refused() >= 4 && flood.waiting() == 4).await,
        "the flood holds the four watches"
    );
    let refused_before = server.stats().calls_refused;
    let consumer = WhoamiClient::discover(&registry, "Whoami")
        .cache_dir(cache.path())
        .initial_wait(Duration::from_secs(1))
        .build()
        .await
        .expect("discover");
    // Its watches are refused: it keeps what its cache file said, calls
    // work, and it keeps asking (with backoff, not in a tight loop).
    let second = start_provider(&registry, "second", |b| b).await;
    let asked =
        eventually(Duration::from_secs(10), || server.stats().calls_refused >= refused_before + 3).await;
    assert!(asked, "the consumer keeps trying to watch");
    assert_eq!(known(&consumer), 1, "it cannot hear of the second provider while refused");
    for _ in 0..20 {
        assert_eq!(consumer.name().await.expect("calls go to the cached instance"), "first");
    }
    // The flood ends: it watches again and catches up.
    flood.stop();
    assert!(
        eventually(Duration::from_secs(15), || known(&consumer) == 2).await,
        "the consumer caught up once it could watch again"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_larger_than_a_frame_is_listed_and_discovered_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry_handle = start_registry(dir.path()).await;
    let registry = connect(registry_handle.local_addr()).await;
    let revision_before = registry.list("Big").await.expect("list").revision;
    // 300 instances of about 60 KB each (under the 64 KiB limit): 18 MB,
    // more than a 16 MiB frame.
    let count = 300usize;
    let instance = |i: usize| {
        Instance::new("Big", format!("10.9.{}.{}:9000", i / 250, i % 250))
            .with_id(format!("big-{i:03}"))
            .with_metadata("blob", "x".repeat(60_000))
    };
    let next = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (registry, next) = (registry.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    registry.register(instance(i), Duration::from_secs(300)).await.expect("register");
                }
            })
        })
        .collect();
    for writer in writers {
        within(Duration::from_secs(120), "the writers", writer).await.expect("writer");
    }

    let started = Instant::now();
    let listed = registry.list("Big").await.expect("a listing of more than a frame");
    let listing = started.elapsed();
    assert_eq!(listed.instances.len(), count);
    let total: usize = listed.instances.iter().map(Instance::encoded_len).sum();
    assert!(total > 16 << 20, "the service adds up to {total} bytes");
    let ids: BTreeSet<&str> = listed.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), count, "no instance listed twice");
    assert_eq!(registry.registrations(Some("Big")).await.expect("registrations").len(), count);
    assert_eq!(registry.registrations(None).await.expect("every registration").len(), count);

    // A new consumer discovers all of them.
    let started = Instant::now();
    let consumer = courier::Channel::discover(&registry, "Big").no_cache().build().await.expect("discover");
    let discovered =
        eventually(Duration::from_secs(20), || consumer.instances().is_some_and(|i| i.len() == count)).await;
    let discovering = started.elapsed();
    assert!(discovered, "the consumer knows {:?} of {count}", consumer.instances().map(|i| i.len()));

    // A watcher behind by the last 50 registrations (3 MB of events) gets
    // every one of them, over several polls.
    let last_50 = revision_before + (count as u64 - 50);
    let mut watch = registry.watch("Big", Some(last_50)).await.expect("watch");
    let mut added = BTreeSet::new();
    while added.len() < 50 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("an event within 10 s")
            .expect("the watch is open")
            .expect("no watch error");
        match event {
            courier::registry::WatchEvent::Add { instance, .. } => {
                added.insert(instance.id);
            }
            other => panic!("expected the last 50 additions, got {:?}", other.revision()),
        }
    }
    eprintln!(
        "a service of {count} instances, {:.1} MB: listed in {listing:?}, discovered by a new consumer in {discovering:?}",
        total as f64 / 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_name_the_protocols_the_server_answers() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let _all = start_provider(&registry, "all", |b| b).await;
    let _some = start_provider(&registry, "some", |b| {
        b.disable_protocol(courier::Protocol::JsonRpc).disable_protocol(courier::Protocol::HttpJson)
    })
    .await;
    // Both register as soon as they are bound; wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let protocols = loop {
        let mut protocols: Vec<Vec<String>> =
            registry.list("Whoami").await.expect("list").instances.into_iter().map(|i| i.protocols).collect();
        protocols.sort();
        if protocols.len() == 2 || Instant::now() >= deadline {
            break protocols;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        protocols,
        vec![
            vec!["courier".to_owned(), "grpc".to_owned(), "gorpc".to_owned()],
            vec![
                "courier".to_owned(),
                "grpc".to_owned(),
                "jsonrpc".to_owned(),
                "http".to_owned(),
                "gorpc".to_owned()
            ],
        ],
        "what each server switched on (all four are compiled into the tests)"
    );
    // Consumers that speak the native protocol use both.
    let client = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_instances_get_calls_only_when_no_other_can_take_them() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    // Leases far longer than the test: the dead provider must stay
    // registered, so that only the balancer's tiering can explain the
    // fallback (a 2 s lease ran out on a slow CI machine).
    let lease = Duration::from_secs(120);
    let serving = start_provider(&registry, "serving", |b| b.registration_ttl(lease)).await;
    let _standby =
        start_provider(&registry, "standby", |b| b.instance_weight(0).registration_ttl(lease)).await;
    for balance in [Balance::RoundRobin, Balance::WeightedRandom, Balance::P2c] {
        let client = discover(&registry, balance).await;
        assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await, "both discovered");
        let counts = within(Duration::from_secs(20), "100 calls", shares(&client, 100)).await;
        assert_eq!(counts.get("serving"), Some(&100), "{balance:?}: weight 0 gets nothing: {counts:?}");
    }
    // The other one stops listening (its lease has not run out): weight 0
    // is better than a certain failure.
    let client = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await, "both discovered");
    serving.abort();
    let counts = within(Duration::from_secs(20), "20 calls", shares(&client, 20)).await;
    assert_eq!(counts.get("standby"), Some(&20), "the weight-0 instance takes over: {counts:?}");
    assert_eq!(known(&client), 2, "the unreachable one is still registered: the fallback was the tier");
}

/// Which of the consumer's instances each of `keys` goes to.
async fn owners(client: &WhoamiClient, keys: usize) -> Vec<String> {
    let mut owners = Vec::with_capacity(keys);
    for key in 0..keys {
        let keyed = client.with_hash_key(format!("user-{key}"));
        owners.push(within(Duration::from_secs(10), "a keyed call", keyed.name()).await.expect("call"));
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_moves_only_the_keys_of_the_instance_that_came_or_went() {
    const KEYS: usize = 600;
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let mut providers = Vec::new();
    for name in ["h1", "h2", "h3", "h4", "h5"] {
        providers.push(start_provider(&registry, name, |b| b).await);
    }
    let client = discover(&registry, Balance::ConsistentHash).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 5).await);
    let five = owners(&client, KEYS).await;
    assert_eq!(owners(&client, KEYS).await, five, "a stable set maps every key the same way again");

    // One joins: only keys that now belong to it moved, about 1/6 of them.
    let _h6 = start_provider(&registry, "h6", |b| b).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 6).await);
    let six = owners(&client, KEYS).await;
    let moved: Vec<usize> = (0..KEYS).filter(|&k| five[k] != six[k]).collect();
    assert!(moved.iter().all(|&k| six[k] == "h6"), "keys moved only to the newcomer");
    eprintln!("consistent hash: 5 -> 6 instances moved {} of {KEYS} keys", moved.len());
    assert!(
        !moved.is_empty() && moved.len() < 2 * KEYS / 6,
        "{} of {KEYS} keys moved (1/6 is ideal)",
        moved.len()
    );

    // One leaves: only its keys moved, about 1/6 of them.
    let h1 = providers.remove(0);
    within(Duration::from_secs(10), "h1's graceful shutdown", h1.shutdown()).await.expect("shutdown");
    assert!(eventually(Duration::from_secs(5), || known(&client) == 5).await);
    let after = owners(&client, KEYS).await;
    let moved: Vec<usize> = (0..KEYS).filter(|&k| six[k] != after[k]).collect();
    assert!(moved.iter().all(|&k| six[k] == "h1"), "only the leaver's keys moved");
    assert!(after.iter().all(|owner| owner != "h1"));
    eprintln!("consistent hash: 6 -> 5 instances moved {} of {KEYS} keys", moved.len());
    assert!(
        !moved.is_empty() && moved.len() < 2 * KEYS / 6,
        "{} of {KEYS} keys moved (1/6 is ideal)",
        moved.len()
    );
}

/// Log lines (INFO and up) written while it is the thread's default
/// subscriber: a test on a current-thread runtime sees its tasks' logs.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, impl Drop) {
        use tracing_subscriber::util::SubscriberInitExt;
        let logs = Logs::default();
        let guard = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .finish()
            .set_default();
        (logs, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

// Current-thread runtimes: the discovery task logs on this thread, where
// the capturing subscriber is.
#[tokio::test]
async fn a_corrupt_cache_file_is_ignored_with_a_warning_and_rewritten() {
    let (logs, _guard) = Logs::capture();
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let provider = start_provider(&registry, "fresh", |b| b).await;
    let cache = tempfile::tempdir().expect("cache dir");
    let path = courier::discovery::cache::cache_path(cache.path(), "Whoami");
    std::fs::write(&path, b"{\"service\": \"Whoami\", \"instances\": [tru")
        .expect("write a corrupt cache file");

    let client =
        WhoamiClient::discover(&registry, "Whoami").cache_dir(cache.path()).build().await.expect("discover");
    assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await, "discovered from the registry");
    assert_eq!(within(Duration::from_secs(5), "a call", client.name()).await.expect("call"), "fresh");
    let text = logs.text();
    assert!(text.contains("ignoring an unreadable registry cache file"), "logs: {text}");
    assert!(text.contains(&path.display().to_string()), "the warning names the file: {text}");
    // The registry's answer replaced it.
    let rewritten = eventually(Duration::from_secs(5), || {
        courier::discovery::cache::load(&path, "Whoami").is_some_and(|view| {
            view.instances().iter().map(|i| i.addr.clone()).collect::<Vec<_>>()
                == [provider.local_addr().to_string()]
        })
    })
    .await;
    assert!(rewritten, "the cache file holds the registry's answer: {:?}", std::fs::read_to_string(&path));
}

#[tokio::test]
async fn an_unwritable_cache_directory_is_reported_and_discovery_works() {
    let (logs, _guard) = Logs::capture();
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let _provider = start_provider(&registry, "fresh", |b| b).await;
    // A directory under a regular file can be neither created nor written
    // (even by root, for whom permission bits are no obstacle).
    let scratch = tempfile::tempdir().expect("temp dir");
    let blocker = scratch.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let dir = blocker.join("cache");

    let client = WhoamiClient::discover(&registry, "Whoami").cache_dir(&dir).build().await.expect("discover");
    assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await, "discovered from the registry");
    assert_eq!(within(Duration::from_secs(5), "a call", client.name()).await.expect("call"), "fresh");
    let warned = eventually(Duration::from_secs(5), || {
        logs.text().contains("could not write the registry cache file")
    })
    .await;
    let text = logs.text();
    assert!(warned, "logs: {text}");
    assert!(text.contains(&dir.display().to_string()), "the warning names the file: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_ends_at_the_registrys_graceful_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_registry(dir.path()).await;
    let registry = connect(server.local_addr()).await;
    let mut watch =
        within(Duration::from_secs(5), "watch", registry.watch("Quiet", None)).await.expect("watch");
    let reset = within(Duration::from_secs(5), "the Reset", watch.next()).await;
    assert!(matches!(reset, Some(Ok(courier::registry::WatchEvent::Reset { .. }))), "{reset:?}");
    // The next poll waits for a change that never comes (up to 10 s).
    let polling = eventually(Duration::from_secs(5), || server.stats().budget_in_use > 0).await;
    assert!(polling, "the long poll is in flight: {:?}", server.stats());

    let stopping = Instant::now();
    within(Duration::from_secs(3), "a graceful shutdown with a long poll in flight", server.shutdown())
        .await
        .expect("graceful shutdown");
    let stopped_in = stopping.elapsed();
    // The watcher hears that the registry went (and resumes elsewhere or
    // later), rather than hanging on a poll nobody will answer.
    match within(Duration::from_secs(3), "the watch to end", watch.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(event)) => panic!("nothing changed, yet the watch saw {event:?}"),
    }
    eprintln!("graceful shutdown with a long poll in flight: {stopped_in:?}");
}

/// Whether `service` is listed with `count` instances within `timeout`,
/// asking every 50 ms (failed listings count as not yet).
async fn listed(registry: &Registry, service: &str, count: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let answer = tokio::time::timeout(Duration::from_secs(2), registry.list(service)).await;
        if let Ok(Ok(snapshot)) = answer
            && snapshot.instances.len() == count
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_started_while_the_registry_is_unreachable_serves_and_registers_once_it_appears() {
    let binary = env!("CARGO_BIN_EXE_courier-test-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    // The registry's address: where one listened, then went away.
    let addr = ChildServer::start_anywhere(binary, &["--registry-data", &data]).addr;
    let registry = connect(addr).await;

    let provider = start_provider(&registry, "early", |b| b).await;
    let direct = WhoamiClient::connect(provider.local_addr().to_string()).await.expect("connect");
    assert_eq!(
        within(Duration::from_secs(5), "a direct call", direct.name()).await.expect("it serves meanwhile"),
        "early"
    );
    // Down for a while (a few registration attempts' worth).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !listed(&registry, "Whoami", 1, Duration::from_millis(100)).await,
        "nobody answers at {addr} yet"
    );
    assert_eq!(
        within(Duration::from_secs(5), "a direct call", direct.name()).await.expect("still serving"),
        "early"
    );

    let _registry_process = ChildServer::start_with(binary, addr, &["--registry-data", &data]);
    // The provider retries with backoff of up to 5 s.
    assert!(
        listed(&registry, "Whoami", 1, Duration::from_secs(15)).await,
        "the provider registered once the registry appeared"
    );
    let snapshot = within(Duration::from_secs(5), "list", registry.list("Whoami")).await.expect("list");
    assert_eq!(snapshot.instances[0].addr, provider.local_addr().to_string());
    let client = discover(&registry, Balance::RoundRobin).await;
    assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await);
    assert_eq!(within(Duration::from_secs(5), "a call", client.name()).await.expect("call"), "early");
}

/// What one crash of the registry left: the registrations acknowledged
/// before it, those a watcher was told of, and those that survived it.
struct Crash {
    acknowledged: BTreeSet<String>,
    seen: BTreeSet<String>,
    survivors: BTreeSet<String>,
    attempted: usize,
}

/// Register instances of `service` from 16 writers at once and SIGKILL the
/// registry once 100 are acknowledged (with more in flight), then start it
/// again on its data and port.
async fn register_through_a_crash(
    registry_process: ChildServer,
    registry: &Registry,
    service: &str,
) -> (ChildServer, Crash) {
    // A watcher records every instance it is told of, until the watch ends.
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let mut watch =
        within(Duration::from_secs(5), "watch", registry.watch(service, None)).await.expect("watch");
    let watcher = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_secs(30), watch.next()).await
            {
                if let courier::registry::WatchEvent::Add { instance, .. } = event {
                    seen.lock().expect("seen").insert(instance.id);
                }
            }
        }
    });
    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (registry, acknowledged, next) = (registry.clone(), acknowledged.clone(), next.clone());
            let service = service.to_owned();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let id = format!("d{n:05}");
                    let instance =
                        Instance::new(service.clone(), format!("10.8.{}.{}:9000", n / 250, n % 250))
                            .with_id(&id);
                    let ttl = Duration::from_secs(300);
                    match tokio::time::timeout(Duration::from_secs(5), registry.register(instance, ttl)).await
                    {
                        Ok(Ok(_)) => {
                            acknowledged.lock().expect("acknowledged").insert(id);
                        }
                        // The registry was killed: stop.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let enough =
        eventually(Duration::from_secs(20), || acknowledged.lock().expect("acknowledged").len() >= 100).await;
    assert!(enough, "100 registrations acknowledged");
    // SIGKILL mid-stream (writes in flight), then start again on its data.
    let registry_process =
        tokio::task::spawn_blocking(move || registry_process.restart()).await.expect("restart the registry");
    for writer in writers {
        within(Duration::from_secs(10), "a writer to stop", writer).await.expect("writer");
    }
    within(Duration::from_secs(35), "the watcher to end", watcher).await.expect("watcher");
    // The client may still be backing off from connects refused while the
    // registry was down (and fails fast meanwhile): ask until it answers.
    let listed = within(Duration::from_secs(10), "list after the restart", async {
        loop {
            match registry.list(service).await {
                Ok(listed) => break listed,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    let survivors = listed.instances.into_iter().map(|i| i.id).collect();
    let crash = Crash {
        acknowledged: acknowledged.lock().expect("acknowledged").clone(),
        seen: seen.lock().expect("seen").clone(),
        survivors,
        attempted: next.load(Ordering::SeqCst),
    };
    (registry_process, crash)
}

// Each round: registrations race a SIGKILL; what was acknowledged must
// survive, and what a watcher saw must too (answers to List and Watch wait
// for the writer's durable-through revision; without that, a watcher read
// concurrent registrations applied in memory but not yet on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watcher_sees_a_registration_that_a_sigkill_loses() {
    let binary = env!("CARGO_BIN_EXE_courier-test-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut registry_process = ChildServer::start_anywhere(binary, &["--registry-data", &data]);
    let registry = connect(registry_process.addr).await;
    // Each crash lands at a different moment of the writes' group commits;
    // several make it likely one falls between telling watchers and the
    // disk, were the order wrong.
    for round in 0..5 {
        let service = format!("Durable{round}");
        let (restarted, crash) = register_through_a_crash(registry_process, &registry, &service).await;
        registry_process = restarted;
        eprintln!(
            "SIGKILL {round} after {} acknowledged registrations ({} attempted): {} survived, the watcher saw {}",
            crash.acknowledged.len(),
            crash.attempted,
            crash.survivors.len(),
            crash.seen.len()
        );
        let lost: Vec<&String> = crash.acknowledged.difference(&crash.survivors).collect();
        assert!(lost.is_empty(), "crash {round}: acknowledged, then lost: {lost:?}");
        // Not vacuous: the watcher was told of registrations as they went.
        assert!(
            crash.seen.len() >= 10,
            "crash {round}: the watcher saw only {} registrations",
            crash.seen.len()
        );
        let phantom: Vec<&String> = crash.seen.difference(&crash.survivors).collect();
        assert!(phantom.is_empty(), "crash {round}: a watcher saw these, the disk lost them: {phantom:?}");
    }
}

/// A registry as it was before the streaming watch: every method but
/// `Follow`, which it does not know.
struct OldRegistry {
    inner: courier::registry::courier::api::RegistryApiServer<courier_registry::RegistryServer>,
    /// `Follow` calls refused, and `Watch` calls served.
    follows: Arc<AtomicUsize>,
    watches: Arc<AtomicUsize>,
}

impl courier::Service for OldRegistry {
    fn descriptor(&self) -> &'static courier::ServiceDescriptor {
        self.inner.descriptor()
    }

    fn call(
        &self,
        method: usize,
        cx: courier::Context,
        body: bytes::Bytes,
    ) -> BoxFuture<'static, Result<bytes::Bytes, courier::Status>> {
        match self.descriptor().methods[method].name {
            "Follow" => {
                self.follows.fetch_add(1, Ordering::SeqCst);
                return Box::pin(std::future::ready(Err(courier::Status::unimplemented(
                    "unknown method CourierRegistry.Follow",
                ))));
            }
            "Watch" => {
                self.watches.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        self.inner.call(method, cx, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_a_registry_without_the_streaming_watch_long_poll_instead() {
    within(
        Duration::from_secs(60),
        "consumers_of_a_registry_without_the_streaming_watch_long_poll_instead",
        async {
            let dir = tempfile::tempdir().expect("temp dir");
            let registry_server = courier_registry::open(dir.path()).await.expect("open registry");
            let (follows, watches) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let old = OldRegistry {
                inner: registry_server.into_service(),
                follows: follows.clone(),
                watches: watches.clone(),
            };
            let server =
                courier::Server::builder().add_service(old).bind("127.0.0.1:0").await.expect("bind").start();
            let registry = connect(server.local_addr()).await;
            let _first = start_provider(&registry, "first", |b| b).await;
            let consumer = WhoamiClient::discover(&registry, "Whoami").build().await.expect("discover");
            assert!(eventually(Duration::from_secs(5), || known(&consumer) == 1).await, "listed");
            // A change reaches it through long polls.
            let _second = start_provider(&registry, "second", |b| b).await;
            assert!(eventually(Duration::from_secs(5), || known(&consumer) == 2).await, "watched");
            assert_eq!(follows.load(Ordering::SeqCst), 1, "asked to follow once, then long-polled");
            assert!(watches.load(Ordering::SeqCst) >= 2, "long polls carried the change");
        },
    )
    .await;
}
