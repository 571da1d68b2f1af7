//! Every registry backend passes the same contract (`tests/support/contract.rs`),
//! one test per behaviour and backend, so the first failure hides nothing;
//! then etcd's interoperability with etcdctl and grpc-go's layout, and what
//! only Redis must survive (its restarts, killed providers, foreign data).

use std::time::Duration;

use courier::registry::{Registry, Revision};
use courier_tests::{
    CalculatorClient, ChildServer, EtcdServer, RedisServer, WhoamiClient, ZooKeeper,
    contract_a_kept_alive_lease_lives_and_an_abandoned_one_expires,
    contract_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once,
    contract_a_restart_under_load_fails_no_call, contract_a_resumed_watch_gets_exactly_the_changes_since,
    contract_a_watch_resumed_from_before_compaction_gets_a_complete_reset,
    contract_deregistering_removes_at_once, contract_registering_again_is_an_update,
    contract_registrations_are_listed_and_nonsense_is_refused,
    contract_watch_starts_with_the_full_set_then_sees_each_change, eventually, overflow_event_log,
    registry_ownership_contract, start_provider, start_registry, within,
};

/// How long one contract test may take (the lease test alone waits 3.5 s).
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A backend under test and whatever keeps it alive.
struct Backend {
    registry: Registry,
    peer: Peer,
}

enum Peer {
    Mem,
    Courier { _server: courier::ServerHandle, _data: tempfile::TempDir },
    Etcd(EtcdServer),
    Redis(RedisServer),
    ZooKeeper(ZooKeeper),
}

async fn mem() -> Backend {
    let registry = courier::registry::connect("mem://").await.expect("connect");
    Backend { registry, peer: Peer::Mem }
}

/// The bundled registry, in this process, on disk in a temporary directory.
async fn bundled() -> Backend {
    let data = tempfile::tempdir().expect("temp dir");
    let server = start_registry(data.path()).await;
    let url = format!("courier://{}", server.local_addr());
    let registry = courier::registry::connect(&url).await.expect("connect");
    Backend { registry, peer: Peer::Courier { _server: server, _data: data } }
}

async fn etcd() -> Backend {
    let etcd = EtcdServer::launch().await;
    let registry = courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
    Backend { registry, peer: Peer::Etcd(etcd) }
}

/// A real Redis, started for this test alone.
async fn redis() -> Backend {
    let redis = RedisServer::launch().await;
    let registry = courier::registry::connect(&redis.url()).await.expect("connect");
    Backend { registry, peer: Peer::Redis(redis) }
}

/// A real ZooKeeper, started for this test alone.
async fn zookeeper() -> Backend {
    let zookeeper = ZooKeeper::launch().await;
    let registry = courier::registry::connect(&zookeeper.url()).await.expect("connect");
    Backend { registry, peer: Peer::ZooKeeper(zookeeper) }
}

impl Backend {
    /// Make the backend forget `service`'s history through `revision`, its
    /// own way: etcd compacts (`etcdctl compact`); the store backends keep
    /// a byte-bounded log per service, so overflowing it drops the oldest.
    async fn compact(&self, service: String, revision: Revision) {
        match &self.peer {
            Peer::Etcd(etcd) => {
                let out = etcd.ctl(&["compact", &revision.to_string()]).await;
                assert!(out.status.success(), "etcdctl compact: {}", String::from_utf8_lossy(&out.stderr));
            }
            // What `MAXLEN` does to a busy log: the oldest entries go.
            Peer::Redis(redis) => {
                let mut raw = redis.connection().await;
                let log = format!("courier/s/{service}/log");
                let _: u64 = redis::cmd("XTRIM")
                    .arg(&log)
                    .arg("MINID")
                    .arg(format!("{}-0", revision + 1))
                    .query_async(&mut raw)
                    .await
                    .expect("XTRIM");
            }
            // ZooKeeper keeps no history; courier's backend keeps what it can
            // prove, and forgets it at a change no revision can order.
            Peer::ZooKeeper(zookeeper) => zookeeper.unorderable_change(&self.registry, &service).await,
            Peer::Mem | Peer::Courier { .. } => overflow_event_log(&self.registry, &service).await,
        }
    }
}

/// One test per behaviour of the contract for the backend `$setup` makes.
macro_rules! contract_tests {
    ($backend:ident, $setup:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_watch_starts_with_the_full_set_then_sees_each_change() {
                let backend = $setup.await;
                let run = contract_watch_starts_with_the_full_set_then_sees_each_change(
                    &backend.registry,
                    stringify!($backend),
                );
                within(TEST_LIMIT, "the contract test", run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deregistering_removes_at_once() {
                let backend = $setup.await;
                let run = contract_deregistering_removes_at_once(&backend.registry, stringify!($backend));
                within(TEST_LIMIT, "the contract test", run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_kept_alive_lease_lives_and_an_abandoned_one_expires() {
                let backend = $setup.await;
                let run = contract_a_kept_alive_lease_lives_and_an_abandoned_one_expires(
                    &backend.registry,
                    stringify!($backend),
                );
                within(TEST_LIMIT, "the contract test", run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_resumed_watch_gets_exactly_the_changes_since() {
                let backend = $setup.await;
                let run = contract_a_resumed_watch_gets_exactly_the_changes_since(
                    &backend.registry,
                    stringify!($backend),
                );
                within(TEST_LIMIT, "the contract test", run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_watch_resumed_from_before_compaction_gets_a_complete_reset() {
                let backend = $setup.await;
                let run = contract_a_watch_resumed_from_before_compaction_gets_a_complete_reset(
                    &backend.registry,
                    stringify!($backend),
                    async |service, revision| backend.compact(service, revision).await,
                );
                within(TEST_LIMIT, "the contract test", run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn registrations_are_listed_and_nonsense_is_refused() {
                let backend = $setup.await;
                let run = contract_registrations_are_listed_and_nonsense_is_refused(
                    &backend.registry,
                    stringify!($backend),
                );
                within(TEST_LIMIT, "the contract test", run).await;
            }
        }
    };
}

contract_tests!(mem_registry, mem());
contract_tests!(bundled_registry, bundled());
contract_tests!(etcd_registry, etcd());
contract_tests!(redis_registry, redis());
contract_tests!(zookeeper_registry, zookeeper());

// What only some backends do. etcd's key is the address, so registering it
// again replaces it (an `Update`); the store backends refuse a live id to
// another lease instead, and limit instance sizes (etcd has its own limits).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registering_an_address_again_is_an_update() {
    let backend = etcd().await;
    let run = contract_registering_again_is_an_update(&backend.registry, "etcd");
    within(TEST_LIMIT, "the contract test", run).await;
}

/// ZooKeeper: an id registered again replaces its node in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_registering_an_address_again_is_an_update() {
    let backend = zookeeper().await;
    let run = contract_registering_again_is_an_update(&backend.registry, "zookeeper");
    within(TEST_LIMIT, "the contract test", run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_registry_refuses_takeovers_and_oversized_instances() {
    let backend = mem().await;
    within(TEST_LIMIT, "the ownership contract", registry_ownership_contract(&backend.registry, "mem")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_registry_refuses_takeovers_and_oversized_instances() {
    let backend = bundled().await;
    within(TEST_LIMIT, "the ownership contract", registry_ownership_contract(&backend.registry, "courier"))
        .await;
}

#[tokio::test]
async fn unknown_schemes_are_clear_errors() {
    let err = courier::registry::connect("consul://h:8500").await.expect_err("unknown scheme");
    assert!(err.to_string().contains("unknown scheme `consul`"), "{err}");
    let err = courier::registry::connect("127.0.0.1:7600").await.expect_err("no scheme");
    assert!(err.to_string().contains("expected scheme://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_entries_interoperate_with_etcdctl_and_the_grpc_go_layout() {
    within(TEST_LIMIT, "etcd_entries_interoperate_with_etcdctl_and_the_grpc_go_layout", async {
        let etcd = EtcdServer::launch().await;
        let registry =
            courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");

        // A server registered by hand, as a Go service or an operator would.
        let (server, _) = courier_tests::start_server(|b| b).await;
        let addr = server.local_addr().to_string();
        let put = etcd.ctl(&["put", &format!("Calculator/{addr}"), &format!(r#"{{"Addr":"{addr}"}}"#)]).await;
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
        let calc =
            CalculatorClient::discover(&registry, "Calculator").no_cache().build().await.expect("discover");
        assert!(
            eventually(Duration::from_secs(5), || calc.channel().instances().is_some_and(|i| i.len() == 1))
                .await
        );
        assert_eq!(calc.add(2, 3).await.expect("routed to the etcdctl entry"), 5);

        // An entry keyed by a name, not its address: the key names the instance,
        // so deleting the key removes it.
        let (named, _) = courier_tests::start_server(|b| b).await;
        let named_addr = named.local_addr().to_string();
        let put = etcd.ctl(&["put", "Calculator/e1", &format!(r#"{{"Addr":"{named_addr}"}}"#)]).await;
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
        let instances = |calc: &CalculatorClient| calc.channel().instances().unwrap_or_default();
        let added = eventually(Duration::from_secs(5), || {
            instances(&calc).iter().any(|i| i.id == "e1" && i.addr == named_addr)
        })
        .await;
        assert!(added, "the named entry is discovered: {:?}", instances(&calc));
        let del = etcd.ctl(&["del", "Calculator/e1"]).await;
        assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
        let removed = eventually(Duration::from_secs(5), || {
            let now = instances(&calc);
            now.len() == 1 && now[0].addr == addr
        })
        .await;
        assert!(removed, "deleting the key removes the instance: {:?}", instances(&calc));

        // courier's own registrations, as etcdctl (and grpc-go) see them.
        let provider = start_provider(&registry, "from-courier", |b| b).await;
        let provider_addr = provider.local_addr().to_string();
        let listed =
            etcd_eventually(&etcd, &["get", "--prefix", "Calculator/"], |out| out.contains(&provider_addr))
                .await;
        assert!(listed, "courier's registration is visible to etcdctl");
        let out = etcd.ctl(&["get", &format!("Calculator/{provider_addr}"), "--print-value-only"]).await;
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON value");
        assert_eq!(value["Op"], 0);
        assert_eq!(value["Addr"], provider_addr.as_str());
        // grpc-go hashes `Metadata`: null, as its own endpoints manager writes
        // it; courier's fields sit beside it.
        assert_eq!(value.get("Metadata"), Some(&serde_json::Value::Null), "{value}");
        assert_eq!(value["courier"]["version"], "1.0.0");
        // And it is under a lease: deregistering removes it.
        provider.shutdown().await.expect("graceful shutdown");
        let gone =
            etcd_eventually(&etcd, &["get", "--prefix", "Calculator/"], |out| !out.contains(&provider_addr))
                .await;
        assert!(gone, "deregistered on shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_follows_an_etcd_that_lost_its_data() {
    within(TEST_LIMIT, "a_consumer_follows_an_etcd_that_lost_its_data", async {
        let etcd = EtcdServer::launch().await;
        let registry =
            courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
        // Move etcd's revision well past what the empty replacement will reach.
        for i in 0..30 {
            let put = etcd.ctl(&["put", &format!("unrelated/{i}"), "x"]).await;
            assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
        }
        let _a = start_provider(&registry, "a", |b| b).await;
        let client = WhoamiClient::discover(&registry, "Whoami").no_cache().build().await.expect("discover");
        let known = |client: &WhoamiClient| client.channel().instances().map_or(0, |i| i.len());
        assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await);

        let etcd = tokio::task::spawn_blocking(move || etcd.replace_with_empty())
            .await
            .expect("etcd restarts empty");
        // The provider re-registers when its lease is found missing; a second
        // one registers fresh. Both land at revisions below the consumer's.
        let _b = start_provider(&registry, "b", |b| b).await;
        let caught_up = eventually(Duration::from_secs(15), || known(&client) == 2).await;
        let out = etcd.ctl(&["get", "--prefix", "Whoami/", "--keys-only"]).await;
        assert!(
            caught_up,
            "the consumer re-read the service; it knows {:?}, etcd has {}",
            client.channel().instances(),
            String::from_utf8_lossy(&out.stdout)
        );
        let mut names: Vec<String> = Vec::new();
        for _ in 0..20 {
            names.push(client.name().await.expect("call"));
        }
        assert!(names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"), "{names:?}");
    })
    .await;
}

/// Whether `etcdctl args` prints what `wanted` accepts within 5 s, asking
/// every 50 ms (off the runtime's workers).
async fn etcd_eventually(etcd: &EtcdServer, args: &[&str], wanted: impl Fn(&str) -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = etcd.ctl(args).await;
        if wanted(&String::from_utf8_lossy(&out.stdout)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// What only Redis must survive: it is a store of keys, not a registry, so
// expiry, restarts and other writers are courier's to handle.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_refuses_takeovers_and_oversized_instances() {
    let backend = redis().await;
    within(TEST_LIMIT, "the ownership contract", registry_ownership_contract(&backend.registry, "redis"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_foreign_and_garbage_data_under_the_prefix_is_skipped() {
    use courier::registry::{Instance, WatchEvent};
    use courier_tests::next_event;

    within(TEST_LIMIT, "redis_foreign_and_garbage_data_under_the_prefix_is_skipped", async {
        let redis = RedisServer::launch().await;
        let registry = courier::registry::connect(&redis.url()).await.expect("connect");
        let mut raw = redis.connection().await;
        let ttl = Duration::from_secs(10);
        let first = registry.register(Instance::new("Garbage", "127.0.0.1:7201"), ttl).await.expect("register");
        let mut watch = registry.watch("Garbage", None).await.expect("watch");
        assert!(matches!(next_event(&mut watch).await, WatchEvent::Reset { instances, .. } if instances.len() == 1));

        // Another writer's keys, beside courier's and among them.
        let far = 4_000_000_000_000u64; // ms: long after this test
        let stranger = serde_json::to_string(&Instance::new("Garbage", "10.0.0.9:1").with_id("someone-else"))
            .expect("json");
        let mut writes = redis::pipe();
        writes
            .cmd("SET").arg("courier/unrelated").arg("x").ignore()
            .cmd("SET").arg("courier/s/Garbage/other").arg("x").ignore()
            .cmd("ZADD").arg("courier/s/Garbage/deadlines").arg(far).arg("not-a-hash").ignore()
            .cmd("SET").arg("courier/s/Garbage/i/not-a-hash").arg("x").ignore()
            .cmd("ZADD").arg("courier/s/Garbage/deadlines").arg(far).arg("bad-json").ignore()
            .cmd("HSET").arg("courier/s/Garbage/i/bad-json").arg("lease").arg(1).arg("ttl").arg(9000)
            .arg("registered").arg(1).arg("instance").arg("{not json").ignore()
            .cmd("ZADD").arg("courier/s/Garbage/deadlines").arg(far).arg("mismatch").ignore()
            .cmd("HSET").arg("courier/s/Garbage/i/mismatch").arg("lease").arg(1).arg("ttl").arg(9000)
            .arg("registered").arg(1).arg("instance").arg(&stranger).ignore()
            .cmd("ZADD").arg("courier/s/Garbage/deadlines").arg(far).arg("no-key").ignore()
            .cmd("ZADD").arg("courier/services").arg(0).arg("NoSuchService").ignore()
            // A log entry in another writer's ids, and one in courier's
            // (under the next revision) that says nothing readable.
            .cmd("XADD").arg("courier/s/Garbage/log").arg("*").arg("op").arg("add").arg("id").arg("x").ignore();
        let () = writes.query_async(&mut raw).await.expect("write the garbage");
        let next: u64 = redis::cmd("INCR").arg("courier/s/Garbage/rev").query_async(&mut raw).await.expect("INCR");
        let _: String = redis::cmd("XADD")
            .arg("courier/s/Garbage/log")
            .arg(format!("{next}-0"))
            .arg("op")
            .arg("add")
            .arg("id")
            .arg("y")
            .arg("instance")
            .arg("{nope")
            .query_async(&mut raw)
            .await
            .expect("XADD");
        // Keys of the wrong type where courier writes and reads.
        for key in ["courier/s/Typed/deadlines", "courier/s/Typed/rev", "courier/s/Logless/log"] {
            let () = redis::cmd("SET").arg(key).arg("x").query_async(&mut raw).await.expect("SET");
        }
        let () = redis::cmd("HSET").arg("courier/s/Typed/log").arg("a").arg("b").query_async(&mut raw).await.expect("HSET");

        // The watch goes on past all of it to the next real change.
        let second = registry.register(Instance::new("Garbage", "127.0.0.1:7202"), ttl).await.expect("register");
        match next_event(&mut watch).await {
            WatchEvent::Add { instance, revision } => {
                assert_eq!(instance.addr, "127.0.0.1:7202");
                assert!(revision > next, "after the unreadable entry");
            }
            other => panic!("expected the Add past the garbage, got {other:?}"),
        }
        let addrs = |instances: &[Instance]| -> Vec<String> {
            let mut addrs: Vec<String> = instances.iter().map(|i| i.addr.clone()).collect();
            addrs.sort_unstable();
            addrs
        };
        let listed = registry.list("Garbage").await.expect("list");
        assert_eq!(addrs(&listed.instances), ["127.0.0.1:7201", "127.0.0.1:7202"], "only courier's instances");
        let all = registry.registrations(None).await.expect("registrations");
        let services: Vec<&str> = all.iter().map(|r| r.instance.service.as_str()).collect();
        assert_eq!(services, ["Garbage", "Garbage"], "{all:?}");

        // Where courier must write, keys of the wrong type are replaced.
        let typed = registry.register(Instance::new("Typed", "127.0.0.1:7203"), ttl).await.expect("register");
        assert_eq!(addrs(&registry.list("Typed").await.expect("list").instances), ["127.0.0.1:7203"]);
        let mut logless = registry.watch("Logless", None).await.expect("watch");
        assert!(matches!(next_event(&mut logless).await, WatchEvent::Reset { instances, .. } if instances.is_empty()));
        let _logged = registry.register(Instance::new("Logless", "127.0.0.1:7204"), ttl).await.expect("register");
        match next_event(&mut logless).await {
            WatchEvent::Add { instance, .. } => assert_eq!(instance.addr, "127.0.0.1:7204"),
            other => panic!("expected the Add once the log is a stream again, got {other:?}"),
        }

        // And expiry still works beside the garbage (the service index of
        // the wrong type, too).
        let () = redis::cmd("SET").arg("courier/swept").arg("never").query_async(&mut raw).await.expect("SET");
        let short = registry
            .register(Instance::new("Garbage", "127.0.0.1:7205"), Duration::from_secs(1))
            .await
            .expect("register");
        assert!(matches!(next_event(&mut watch).await, WatchEvent::Add { .. }));
        match next_event(&mut watch).await {
            WatchEvent::Remove { id, .. } => assert_eq!(id, short.instance_id),
            other => panic!("expected the short lease's Remove, got {other:?}"),
        }
        for lease in [&first, &second, &typed] {
            registry.deregister(lease).await.expect("deregister");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_urls_choose_the_database_and_prefix_and_authenticate() {
    use courier::registry::{Instance, RegistryError};

    within(TEST_LIMIT, "redis_urls_choose_the_database_and_prefix_and_authenticate", async {
        let redis = RedisServer::launch().await;
        let ttl = Duration::from_secs(10);
        let team = courier::registry::connect(&format!("{}/3?prefix=team-a%3A", redis.url()))
            .await
            .expect("connect");
        let lease = team.register(Instance::new("Scoped", "127.0.0.1:7301"), ttl).await.expect("register");
        let db3 = redis::Client::open(format!("{}/3", redis.url())).expect("url");
        let mut db3 = db3.get_multiplexed_async_connection().await.expect("connect");
        let exists: u64 = redis::cmd("EXISTS")
            .arg("team-a:s/Scoped/i/127.0.0.1:7301")
            .query_async(&mut db3)
            .await
            .expect("EXISTS");
        assert_eq!(exists, 1, "the instance is in database 3 under the prefix");
        // Another prefix, or another database, is another registry.
        let default = courier::registry::connect(&redis.url()).await.expect("connect");
        assert!(default.list("Scoped").await.expect("list").instances.is_empty());
        let other = courier::registry::connect(&format!("{}/3", redis.url())).await.expect("connect");
        assert!(other.list("Scoped").await.expect("list").instances.is_empty());
        assert_eq!(team.list("Scoped").await.expect("list").instances.len(), 1);
        team.deregister(&lease).await.expect("deregister");

        // A Redis 6 ACL user.
        let mut raw = redis.connection().await;
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("courier")
            .arg("on")
            .arg(">s3cret")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query_async(&mut raw)
            .await
            .expect("ACL SETUSER");
        let url = format!("redis://courier:s3cret@127.0.0.1:{}", redis.port);
        let user = courier::registry::connect(&url).await.expect("connect");
        assert_eq!(
            user.url(),
            format!("redis://courier@127.0.0.1:{}", redis.port),
            "shown without its password"
        );
        let lease =
            user.register(Instance::new("Authed", "127.0.0.1:7302"), ttl).await.expect("register as courier");
        user.deregister(&lease).await.expect("deregister");
        let wrong = courier::registry::connect(&format!("redis://courier:wrong@127.0.0.1:{}", redis.port))
            .await
            .expect("connecting is lazy");
        let refused = wrong.register(Instance::new("Authed", "127.0.0.1:7303"), ttl).await;
        assert!(
            matches!(refused, Err(RegistryError::Rejected(_) | RegistryError::Unavailable(_))),
            "a wrong password is an error: {refused:?}"
        );

        for bad in ["redis://", "redis://:6379", "redis://h:1/notadb", "redis://h?prefix=%zz"] {
            let err = courier::registry::connect(bad).await.expect_err(bad);
            assert!(matches!(err, RegistryError::InvalidUrl { .. }), "{bad}: {err}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_large_services_are_listed_in_pages_and_reaped_in_batches() {
    use courier::registry::{Instance, WatchEvent};
    use courier_tests::next_event;

    within(TEST_LIMIT, "redis_large_services_are_listed_in_pages_and_reaped_in_batches", async {
        let redis = RedisServer::launch().await;
        let registry = courier::registry::connect(&redis.url()).await.expect("connect");
        // More instances than a listing page (64) and a sweep (256) take.
        const COUNT: usize = 600;
        let instance = |i: usize| Instance::new("Large", format!("10.2.{}.{}:7000", i / 200, i % 200));
        let started = std::time::Instant::now();
        for i in 0..COUNT {
            registry.register(instance(i), Duration::from_secs(1)).await.expect("register");
        }
        let registered = started.elapsed();
        // Listed whole while the service changes under the pages.
        let churn = tokio::spawn({
            let registry = registry.clone();
            async move {
                for i in 0..200 {
                    let lease = registry
                        .register(Instance::new("Large", format!("10.3.0.{i}:7000")), Duration::from_secs(60))
                        .await
                        .expect("register");
                    registry.deregister(&lease).await.expect("deregister");
                }
            }
        });
        let mut watch = registry.watch("Large", None).await.expect("watch");
        let reset = next_event(&mut watch).await;
        let WatchEvent::Reset { instances, .. } = &reset else {
            panic!("expected the full set, got {reset:?}")
        };
        let stable =
            |instances: &[Instance]| instances.iter().filter(|i| i.addr.starts_with("10.2.")).count();
        assert_eq!(stable(instances), COUNT, "every instance in the first set");
        let mut last = 0;
        while !churn.is_finished() {
            let listed = registry.list("Large").await.expect("list");
            let ids: std::collections::BTreeSet<&str> =
                listed.instances.iter().map(|i| i.id.as_str()).collect();
            assert_eq!(ids.len(), listed.instances.len(), "no instance listed twice");
            assert!(
                listed.instances.len() <= COUNT + 1,
                "at most one churning instance: {}",
                listed.instances.len()
            );
            assert!(listed.revision >= last, "listings never go back");
            last = listed.revision;
        }
        churn.await.expect("churn");
        // Abandoned (TTL 1 s, never renewed): the reapers take them all,
        // several sweeps' worth, each with its Remove.
        let mut removed = 0;
        while removed < COUNT {
            match next_event(&mut watch).await {
                WatchEvent::Remove { id, .. } if id.starts_with("10.2.") => removed += 1,
                WatchEvent::Reset { .. } => panic!("a Reset while following the log"),
                _ => {}
            }
        }
        let gone_after = started.elapsed();
        assert!(registry.list("Large").await.expect("list").instances.is_empty());
        eprintln!(
            "{COUNT} registered in {registered:?}; all reaped {gone_after:?} after the first registration"
        );
        // The last lease (registered at `registered`) ends at `registered + 1 s`.
        assert!(gone_after < registered + Duration::from_secs(2), "reaped within TTL + 1 s: {gone_after:?}");
    })
    .await;
}

// The contract's process-level half, for every backend that runs as a
// server of its own (mem:// lives and dies with its process): providers
// SIGKILLed or stopped, and the registry's server crashing under load.

/// The test server binary: a provider in a process of its own, or the
/// bundled registry (`--registry-data`).
const TEST_SERVER: &str = env!("CARGO_BIN_EXE_courier-test-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_registry_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once() {
    let backend = bundled().await;
    let url = backend.registry.url().to_owned();
    within(TEST_LIMIT, "killed and stopped providers", async {
        contract_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once(
            &backend.registry,
            &url,
            TEST_SERVER,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registry_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once() {
    let backend = etcd().await;
    let url = backend.registry.url().to_owned();
    within(TEST_LIMIT, "killed and stopped providers", async {
        contract_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once(
            &backend.registry,
            &url,
            TEST_SERVER,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_registry_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once() {
    let backend = zookeeper().await;
    let url = backend.registry.url().to_owned();
    within(TEST_LIMIT, "killed and stopped providers", async {
        contract_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once(
            &backend.registry,
            &url,
            TEST_SERVER,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once() {
    let redis = RedisServer::launch().await;
    let url = redis.url();
    let registry = courier::registry::connect(&url).await.expect("connect");
    within(TEST_LIMIT, "killed and stopped providers", async {
        contract_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once(
            &registry,
            &url,
            TEST_SERVER,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_registry_restarted_under_load_fails_no_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let process = ChildServer::start_anywhere(TEST_SERVER, &["--registry-data", &data]);
    // Restarted on the port it bound, so its clients find it again.
    let addr = process.addr;
    let registry = courier::registry::connect(&format!("courier://{addr}")).await.expect("connect");
    let mut restarted = None;
    within(TEST_LIMIT, "a restart under load", async {
        contract_a_restart_under_load_fails_no_call(&registry, || async {
            tokio::task::block_in_place(|| {
                process.kill();
                std::thread::sleep(Duration::from_secs(1));
                restarted = Some(ChildServer::start_with(TEST_SERVER, addr, &["--registry-data", &data]));
            });
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registry_restarted_under_load_fails_no_call() {
    let mut etcd = EtcdServer::launch().await;
    let registry = courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
    within(TEST_LIMIT, "a restart under load", async {
        contract_a_restart_under_load_fails_no_call(&registry, || async {
            tokio::task::block_in_place(|| etcd.restart());
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_registry_restarted_under_load_fails_no_call() {
    let mut zookeeper = ZooKeeper::launch().await;
    let registry = courier::registry::connect(&zookeeper.url()).await.expect("connect");
    within(TEST_LIMIT, "a restart under load", async {
        contract_a_restart_under_load_fails_no_call(&registry, || async {
            tokio::task::block_in_place(|| zookeeper.restart());
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_restarted_under_load_fails_no_call() {
    let mut redis = RedisServer::launch().await;
    let registry = courier::registry::connect(&redis.url()).await.expect("connect");
    within(TEST_LIMIT, "a restart under load", async {
        contract_a_restart_under_load_fails_no_call(&registry, || async {
            tokio::task::block_in_place(|| {
                redis.kill();
                std::thread::sleep(Duration::from_secs(1));
                redis.restart();
            });
        })
        .await;
    })
    .await;
}
