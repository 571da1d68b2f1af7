//! The `zookeeper://` backend against real ZooKeeper servers (Debian's
//! `zookeeper`, started per test), beyond the registry contract
//! (`tests/registry.rs`): Apache Dubbo's layout both ways, an ensemble
//! losing its leader under load, sessions that expire, providers that are
//! SIGKILLed, and a consumer written with Dubbo's Python implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier::registry::Registry;
use courier_tests::interop::InteropServer;
use courier_tests::python::tests_dir;
use courier_tests::zookeeper::{dubbo_decode, dubbo_encode, dubbo_python};
use courier_tests::{
    CalculatorClient, ChildServer, InteropImpl, Proxy, WhoamiClient, ZooKeeper, ZooKeeperEnsemble,
    eventually, start_provider, start_server, within,
};

const LIMIT: Duration = Duration::from_secs(120);

async fn connect(url: &str) -> Registry {
    courier::registry::connect(url).await.expect("connect")
}

/// The registrations of `service`, read again while the read itself times
/// out (it may, while the client's session moves to a new leader), for up
/// to 15 s: what is checked is what they say, not how fast the first read is.
async fn registrations_of(registry: &Registry, service: &str) -> Vec<courier::registry::Registration> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match registry.registrations(Some(service)).await {
            Ok(registrations) => return registrations,
            Err(err) if Instant::now() < until => {
                eprintln!("reading the registrations of {service} again: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("the registrations of {service}: {err}"),
        }
    }
}

/// The parameters of a provider URL (Dubbo writes them raw; courier
/// escapes only what would break the URL, which these values never have).
fn params(url: &str) -> BTreeMap<String, String> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// The children of `path` within 5 s once `wanted` accepts them.
async fn children_when(
    client: &zookeeper_client::Client,
    path: &str,
    wanted: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = client.list_children(path).await.unwrap_or_default();
        if wanted(&children) || Instant::now() >= deadline {
            return children;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many instances a consumer routes to.
fn known(client: &WhoamiClient) -> usize {
    client.channel().instances().map_or(0, |instances| instances.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_providers_are_dubbo_providers_and_dubbo_providers_are_called() {
    within(LIMIT, "courier_providers_are_dubbo_providers_and_dubbo_providers_are_called", async {
        let zookeeper = ZooKeeper::launch().await;
        let registry = connect(&zookeeper.url()).await;
        let raw = zookeeper.client().await;

        // A courier provider, as Dubbo's tools and consumers see it.
        let provider = start_provider(&registry, "courier-side", |b| b).await;
        let addr = provider.local_addr().to_string();
        let providers = "/dubbo/Calculator/providers";
        let children = children_when(&raw, providers, |c| c.len() == 1).await;
        assert_eq!(children.len(), 1, "one provider node: {children:?}");
        let url = dubbo_decode(&children[0]).expect("the node name is a URL-encoded URL");
        assert!(url.starts_with(&format!("tri://{addr}/Calculator?")), "{url}");
        let params = params(&url);
        for (key, value) in [
            ("interface", "Calculator"),
            ("side", "provider"),
            ("version", "1.0.0"),
            ("weight", "100"),
            ("dubbo", "2.0.2"),
            ("anyhost", "false"),
            ("application", "courier"),
            ("courier.id", addr.as_str()),
            ("courier.state", "serving"),
        ] {
            assert_eq!(params.get(key).map(String::as_str), Some(value), "{key} in {url}");
        }
        let offered: Vec<&str> = params["courier.protocols"].split(',').collect();
        assert!(offered.contains(&"courier") && offered.contains(&"grpc"), "{url}");
        let timestamp: u64 = params["timestamp"].parse().expect("a timestamp");
        assert!(timestamp > 1_600_000_000_000, "{url}");
        // Ephemeral, owned by the lease's session; the directories persistent.
        let path = format!("{providers}/{}", children[0]);
        let (data, stat) = raw.get_data(&path).await.expect("the node");
        assert_eq!(String::from_utf8_lossy(&data), addr, "the data is the address, as Dubbo-python writes");
        assert_ne!(stat.ephemeral_owner, 0, "an ephemeral node");
        let directory = raw.check_stat("/dubbo/Calculator").await.expect("stat").expect("the directory");
        assert_eq!(directory.ephemeral_owner, 0, "a persistent directory");
        // Leases share the handle's session, so the registering handle
        // names the lease by an id of its own; another process (here, a
        // handle of its own) sees the session owning the node, all it can
        // know of the lease.
        let listed = registry.registrations(Some("Calculator")).await.expect("registrations");
        assert_eq!(listed.len(), 1);
        let session = stat.ephemeral_owner.cast_unsigned();
        assert_ne!(listed[0].lease, session, "a lease id of its own, not the shared session's");
        let observer = connect(&zookeeper.url()).await;
        let seen = observer.registrations(Some("Calculator")).await.expect("registrations");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].lease, session, "elsewhere, the session holding the node");
        // Deregistered at once on a graceful stop.
        provider.shutdown().await.expect("graceful shutdown");
        let left = raw.list_children(providers).await.expect("children");
        assert!(left.is_empty(), "deleted on shutdown, not at session expiry: {left:?}");

        // A provider written as Dubbo 3 writes one, in front of a courier
        // server that is registered nowhere: courier's consumers find it
        // and call it over gRPC (Triple).
        let (server, _) = start_server(|b| b).await;
        let server_addr = server.local_addr();
        let dubbo_url = format!(
            "tri://{server_addr}/Calculator?anyhost=true&application=dubbo-demo-provider&background=false\
             &deprecated=false&dubbo=2.0.2&dynamic=true&generic=false&interface=Calculator&methods=add,sub\
             &pid=4242&prefer.serialization=fastjson2,hessian2&release=3.2.10&service-name-mapping=true\
             &side=provider&timestamp=1700000000000&version=1.0.0"
        );
        let ephemeral =
            zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all());
        let persistent =
            zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
        let dubbo_path = format!("{providers}/{}", dubbo_encode(&dubbo_url));
        raw.create(&dubbo_path, b"", &ephemeral).await.expect("write the Dubbo provider");
        // Next to it: Dubbo's binary protocol (listed, never called) and
        // garbage (skipped, with a warning).
        let binary = "dubbo://127.0.0.1:1/Calculator?interface=Calculator&side=provider";
        raw.create(&format!("{providers}/{}", dubbo_encode(binary)), b"", &ephemeral)
            .await
            .expect("dubbo://");
        raw.create(&format!("{providers}/not%zza%20url"), b"", &persistent).await.expect("garbage");

        // The registry lists both; the consumer routes to the one it speaks.
        let listed = registry.list("Calculator").await.expect("list");
        assert_eq!(listed.instances.len(), 2, "the garbage is skipped: {listed:?}");
        let tri =
            listed.instances.iter().find(|i| i.addr == server_addr.to_string()).expect("the Dubbo provider");
        assert_eq!(tri.protocols, ["grpc"], "Triple is gRPC");
        assert_eq!((tri.version.as_str(), tri.weight), ("1.0.0", 1));
        assert_eq!(tri.metadata.get("application").map(String::as_str), Some("dubbo-demo-provider"));
        let binary =
            listed.instances.iter().find(|i| i.addr == "127.0.0.1:1").expect("the dubbo:// provider");
        assert_eq!(
            binary.protocols,
            ["dubbo"],
            "listed under Dubbo's protocol, which courier does not speak"
        );

        let calc =
            CalculatorClient::discover(&registry, "Calculator").no_cache().build().await.expect("discover");
        let instances = |calc: &CalculatorClient| calc.channel().instances().unwrap_or_default();
        let routed = eventually(Duration::from_secs(5), || {
            let now = instances(&calc);
            now.len() == 1 && now[0].addr == server_addr.to_string()
        })
        .await;
        assert!(routed, "only the Triple provider is routed to: {:?}", instances(&calc));
        for i in 0..20 {
            assert_eq!(calc.add(i, 3).await.expect("called over gRPC, never over dubbo://"), i + 3);
        }
        // Removing the node removes the instance.
        raw.delete(&dubbo_path, None).await.expect("delete");
        assert!(
            eventually(Duration::from_secs(5), || instances(&calc)
                .iter()
                .all(|i| i.addr != server_addr.to_string()))
            .await
        );
    })
    .await;
}

/// Call `Whoami` through `client` until `stop`, counting calls and failures.
fn load(client: WhoamiClient, stop: Arc<AtomicBool>, calls: Arc<AtomicUsize>, failures: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            match client.name().await {
                Ok(_) => calls.fetch_add(1, Ordering::SeqCst),
                Err(err) => {
                    eprintln!("failed call: {err}");
                    failures.fetch_add(1, Ordering::SeqCst)
                }
            };
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_losing_its_leader_under_load_fails_no_call() {
    within(LIMIT, "an_ensemble_losing_its_leader_under_load_fails_no_call", async {
        const TTL: Duration = Duration::from_secs(4);
        let mut ensemble = ZooKeeperEnsemble::launch().await;
        let registry = connect(&ensemble.url()).await;
        let ttl = |b: courier::ServerBuilder| b.registration_ttl(TTL);
        let _a = start_provider(&registry, "a", ttl).await;
        let _b = start_provider(&registry, "b", ttl).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut consumers = Vec::new();
        for _ in 0..2 {
            let client =
                WhoamiClient::discover(&registry, "Whoami").no_cache().build().await.expect("discover");
            assert!(eventually(Duration::from_secs(5), || known(&client) == 2).await);
            load(client.clone(), stop.clone(), calls.clone(), failures.clone());
            consumers.push(client);
        }
        let leases = |registrations: Vec<courier::registry::Registration>| -> BTreeMap<String, u64> {
            registrations.into_iter().map(|r| (r.instance.id, r.lease)).collect()
        };
        // The registering handle lists its own lease ids; another handle
        // lists the sessions holding the nodes.
        let observer = connect(&ensemble.url()).await;
        let before = leases(registry.registrations(Some("Whoami")).await.expect("registrations"));
        let sessions_before = leases(observer.registrations(Some("Whoami")).await.expect("registrations"));
        assert_eq!(before.len(), 2);
        assert_eq!(sessions_before.len(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;

        let killed = ensemble.kill_leader();
        let killed_at = Instant::now();
        assert!(ensemble.has_leader_within(Duration::from_secs(20)), "the two left elect a leader");
        eprintln!("node {killed} (the leader) SIGKILLed; a new leader within {:?}", killed_at.elapsed());
        // Longer than the sessions' timeout: had they not moved to the new
        // leader, they would have expired by now.
        tokio::time::sleep((TTL + Duration::from_secs(2)).saturating_sub(killed_at.elapsed())).await;
        let after = leases(registrations_of(&registry, "Whoami").await);
        assert_eq!(after, before, "the same leases hold the same registrations");
        let sessions_after = leases(registrations_of(&observer, "Whoami").await);
        assert_eq!(sessions_after, sessions_before, "in the same session");

        // Changes after the failover reach the consumers.
        let c = start_provider(&registry, "c", ttl).await;
        for client in &consumers {
            assert!(
                eventually(Duration::from_secs(10), || known(client) == 3).await,
                "the new provider is seen"
            );
        }
        let mut names = Vec::new();
        for _ in 0..30 {
            names.push(consumers[0].name().await.expect("call"));
        }
        assert!(names.iter().any(|name| name == "c"), "calls reach the new provider: {names:?}");
        c.shutdown().await.expect("graceful shutdown");
        for client in &consumers {
            assert!(eventually(Duration::from_secs(10), || known(client) == 2).await, "its removal is seen");
        }

        stop.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (calls, failures) = (calls.load(Ordering::SeqCst), failures.load(Ordering::SeqCst));
        eprintln!("{calls} calls, {failures} failed");
        assert!(calls > 100, "the consumers kept calling: {calls}");
        assert_eq!(failures, 0, "no call failed while the leader was lost");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_session_expired_registers_again() {
    within(LIMIT, "a_provider_whose_session_expired_registers_again", async {
        let zookeeper = ZooKeeper::launch().await;
        // The provider reaches ZooKeeper through a proxy that can cut it off
        // (a partition); the consumer directly.
        let proxy = Proxy::start(zookeeper.addr()).await;
        let provider_registry = connect(&format!("zookeeper://{}", proxy.addr)).await;
        let registry = connect(&zookeeper.url()).await;
        let _provider = start_provider(&provider_registry, "p", |b| b).await;
        let client = WhoamiClient::discover(&registry, "Whoami").no_cache().build().await.expect("discover");
        assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await);
        let leases = || async {
            let registrations = registry.registrations(Some("Whoami")).await.expect("registrations");
            registrations.iter().map(|r| r.lease).collect::<Vec<u64>>()
        };
        let first = leases().await;
        assert_eq!(first.len(), 1);

        // Cut off longer than the session timeout (the 2 s TTL): ZooKeeper
        // expires the session and deletes its node; consumers see it go.
        proxy.block();
        let cut = Instant::now();
        let mut gone = false;
        while cut.elapsed() < Duration::from_secs(10) && !gone {
            gone = leases().await.is_empty();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "the session expired");
        assert!(eventually(Duration::from_secs(5), || known(&client) == 0).await, "the consumer saw it go");

        // Healed: the provider finds its session expired, registers again in
        // a new one, and consumers see it again.
        proxy.unblock();
        let mut again = Vec::new();
        let healed = Instant::now();
        while healed.elapsed() < Duration::from_secs(20) && again.is_empty() {
            again = leases().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(again.len(), 1, "registered again");
        assert_ne!(again, first, "in a new session");
        assert!(
            eventually(Duration::from_secs(5), || known(&client) == 1).await,
            "the consumer sees it again"
        );
        assert_eq!(client.name().await.expect("call"), "p");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_provider_is_gone_when_its_session_times_out() {
    within(LIMIT, "a_sigkilled_provider_is_gone_when_its_session_times_out", async {
        const TTL: Duration = Duration::from_secs(2);
        let zookeeper = ZooKeeper::launch().await;
        let url = zookeeper.url();
        let registry = connect(&url).await;
        let binary = env!("CARGO_BIN_EXE_courier-test-server");
        let args: Vec<String> =
            ["--registry", url.as_str(), "--name", "victim", "--ttl-ms", "2000"].map(str::to_owned).to_vec();
        let victim = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ChildServer::start_anywhere(binary, &args)
        })
        .await
        .expect("start the test server");
        let client = WhoamiClient::discover(&registry, "Whoami").no_cache().build().await.expect("discover");
        assert!(eventually(Duration::from_secs(10), || known(&client) == 1).await);

        victim.kill();
        let killed = Instant::now();
        let mut gone = false;
        while killed.elapsed() < TTL + Duration::from_secs(5) && !gone {
            gone = registry.registrations(Some("Whoami")).await.expect("registrations").is_empty();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed.elapsed();
        assert!(gone, "the killed provider's node is deleted");
        assert!(took <= TTL + Duration::from_secs(1), "within TTL + 1 s of the kill, took {took:?}");
        assert!(eventually(Duration::from_secs(2), || known(&client) == 0).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dubbo_python_consumer_calls_a_courier_provider_over_triple() {
    within(LIMIT, "a_dubbo_python_consumer_calls_a_courier_provider_over_triple", async {
        let zookeeper = ZooKeeper::launch().await;
        let registry = connect(&zookeeper.url()).await;
        let provider = courier::Server::builder()
            .add_service(InteropServer::new(InteropImpl))
            .register_with(&registry)
            .registration_ttl(Duration::from_secs(5))
            .bind("127.0.0.1:0")
            .await
            .expect("bind")
            .start();
        let raw = zookeeper.client().await;
        let providers = children_when(&raw, "/dubbo/interop.Interop/providers", |c| c.len() == 1).await;
        assert_eq!(providers.len(), 1, "registered");

        let output = tokio::process::Command::new(dubbo_python())
            .arg(tests_dir().join("python/dubbo_consumer.py"))
            .arg(zookeeper.addr().to_string())
            .args(["interop.Interop", "hello", "from Dubbo-python ✓"])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .expect("the Python consumer finishes")
            .expect("run the Python consumer");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "the consumer failed: {stderr}");
        let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
            panic!("the consumer printed no JSON ({err}): {stdout}\n{stderr}");
        });
        assert_eq!(result["errors"], serde_json::json!([]), "{stderr}");
        assert_eq!(result["replies"], serde_json::json!(["hello", "from Dubbo-python ✓"]));
        drop(provider);
    })
    .await;
}

/// `mntr`'s `zk_num_alive_connections` of the server at `addr`: how many
/// clients are connected.
fn alive_connections(addr: std::net::SocketAddr) -> usize {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect for mntr");
    stream.set_read_timeout(Some(Duration::from_secs(2))).expect("a read timeout");
    stream.write_all(b"mntr").expect("send mntr");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read mntr");
    answer
        .lines()
        .find_map(|line| line.strip_prefix("zk_num_alive_connections"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no zk_num_alive_connections in mntr's answer: {answer}"))
}

/// The children of `/dubbo/<service>/providers` and the sessions owning
/// them (`ephemeralOwner`), read in multi-reads.
async fn provider_owners(raw: &zookeeper_client::Client, service: &str) -> Vec<(String, i64)> {
    let providers = format!("/dubbo/{}/providers", dubbo_encode(service));
    let children = raw.list_children(&providers).await.expect("children");
    let mut owned = Vec::new();
    for batch in children.chunks(200) {
        let mut reader = raw.new_multi_reader();
        for child in batch {
            reader.add_get_data(&format!("{providers}/{child}")).expect("a valid path");
        }
        for (child, result) in batch.iter().zip(reader.commit().await.expect("multi-read")) {
            if let zookeeper_client::MultiReadResult::Data { stat, .. } = result {
                owned.push((child.clone(), stat.ephemeral_owner));
            }
        }
    }
    owned
}

/// Keep every lease in `leases` alive every `every` until `stop`; failures
/// are counted (and printed).
async fn keep_all_alive(
    registry: Registry,
    leases: Vec<courier::registry::Lease>,
    every: Duration,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::SeqCst) {
        let sweep = Instant::now();
        for lease in &leases {
            if let Err(err) = registry.keep_alive(lease).await {
                eprintln!("keep-alive of lease {} ({}) failed: {err}", lease.id, lease.instance_id);
                failures.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(every.saturating_sub(sweep.elapsed())).await;
    }
}

/// Many instances through one handle share its session (one per TTL, as
/// Dubbo keeps one per process), not one connection each; each lease is
/// still a lease of its own: kept alive, they all live, and the one let
/// lapse goes alone within its TTL + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_instances_share_a_session_and_a_lapsed_lease_goes_alone() {
    within(LIMIT, "many_instances_share_a_session_and_a_lapsed_lease_goes_alone", async {
        use courier::registry::{Instance, RegistryError};

        const COUNT: usize = 2_000;
        // Over services of 100 each: a registration lists its service's
        // providers (to replace its id's node), which costs per instance.
        const SERVICES: usize = 20;
        const WORKERS: usize = 40;
        const TTL: Duration = Duration::from_secs(4);
        let zookeeper = ZooKeeper::launch().await;
        let registry = connect(&zookeeper.url()).await;
        let raw = zookeeper.client().await;
        let service = |i: usize| format!("Many{:02}", i % SERVICES);

        // The lease let lapse later, kept alive here meanwhile.
        let lapsing = registry
            .register(Instance::new(service(0), "10.99.0.1:7000"), TTL)
            .await
            .expect("register the lease to lapse");
        // Registered concurrently through the one handle, each worker
        // keeping its own alive from the start (registering all takes
        // longer than the TTL on two cores).
        let (stop, failures) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let registered = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let (registry, stop, failures, registered) =
                (registry.clone(), stop.clone(), failures.clone(), registered.clone());
            workers.push(tokio::spawn(async move {
                let mut leases = Vec::new();
                let mut swept = Instant::now();
                for i in (worker..COUNT).step_by(WORKERS) {
                    let addr = format!("10.1.{}.{}:7000", i / 250, i % 250);
                    let lease =
                        registry.register(Instance::new(service(i), addr), TTL).await.expect("register");
                    leases.push(lease);
                    registered.fetch_add(1, Ordering::SeqCst);
                    if swept.elapsed() >= TTL / 4 {
                        for lease in &leases {
                            registry.keep_alive(lease).await.expect("keep alive while registering");
                        }
                        swept = Instant::now();
                    }
                }
                let count = leases.len();
                keep_all_alive(registry, leases, TTL / 4, stop, failures).await;
                count
            }));
        }
        let mut kept = Instant::now();
        let keep = async |kept: &mut Instant| {
            if kept.elapsed() >= TTL / 4 {
                registry.keep_alive(&lapsing).await.expect("keep the lapsing lease alive");
                *kept = Instant::now();
            }
        };
        while registered.load(Ordering::SeqCst) < COUNT {
            let so_far = registered.load(Ordering::SeqCst);
            assert!(started.elapsed() < Duration::from_secs(60), "registered {so_far} of {COUNT}");
            keep(&mut kept).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("{COUNT} instances registered in {:?}", started.elapsed());
        let mut owned = Vec::new();
        for s in 0..SERVICES {
            owned.extend(provider_owners(&raw, &service(s)).await);
        }
        assert_eq!(owned.len(), COUNT + 1, "every instance has its node");

        // One session holds them all: one connection, not 2,001.
        let sessions: BTreeSet<i64> = owned.iter().map(|(_, owner)| *owner).collect();
        assert_eq!(sessions.len(), 1, "one session per TTL per handle: {sessions:?}");
        let connections = tokio::task::spawn_blocking({
            let addr = zookeeper.addr();
            move || alive_connections(addr)
        })
        .await
        .expect("mntr");
        // The raw client, the handle's reader and lease sessions, and mntr.
        assert!(connections <= 5, "{connections} connections for {} instances", COUNT + 1);
        eprintln!("{connections} connections to ZooKeeper");

        // Kept alive past twice their TTL, they all live.
        let alive_since = Instant::now();
        while alive_since.elapsed() < TTL * 2 {
            keep(&mut kept).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut now_owned = Vec::new();
        for s in 0..SERVICES {
            now_owned.extend(provider_owners(&raw, &service(s)).await);
        }
        assert_eq!(now_owned.len(), COUNT + 1, "every lease kept alive lives");
        assert_eq!(failures.load(Ordering::SeqCst), 0, "no keep-alive failed");

        // One lease let lapse: only its node goes, within TTL + 1 s of its
        // last keep-alive.
        registry.keep_alive(&lapsing).await.expect("the last keep-alive");
        let last = Instant::now();
        let lapsed = |children: &[(String, i64)]| {
            !children.iter().any(|(name, _)| name.contains(&dubbo_encode("10.99.0.1:7000/")))
        };
        let mut gone = false;
        while last.elapsed() < TTL + Duration::from_secs(3) && !gone {
            gone = lapsed(&provider_owners(&raw, &service(0)).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = last.elapsed();
        assert!(gone, "the lapsed lease's node is deleted");
        assert!(
            took <= TTL + Duration::from_secs(1),
            "within TTL + 1 s of its last keep-alive, took {took:?}"
        );
        assert_eq!(
            registry.keep_alive(&lapsing).await,
            Err(RegistryError::LeaseNotFound(lapsing.id)),
            "a lease that ran out is not found"
        );
        let mut left = Vec::new();
        for s in 0..SERVICES {
            left.extend(provider_owners(&raw, &service(s)).await);
        }
        assert_eq!(left.len(), COUNT, "only the lapsed one went");
        assert!(left.iter().all(|(_, owner)| sessions.contains(owner)), "in the same session");

        stop.store(true, Ordering::SeqCst);
        let mut held = 0;
        for worker in workers {
            held += worker.await.expect("a worker");
        }
        assert_eq!(held, COUNT);
        assert_eq!(failures.load(Ordering::SeqCst), 0, "no keep-alive failed");
        eprintln!("lapsed lease deleted {took:?} after its last keep-alive");
    })
    .await;
}
