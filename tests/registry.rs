//! Every registry backend passes the same contract (`tests/support/contract.rs`),
//! one test per behaviour and backend, so the first failure hides nothing;
//! then etcd's interoperability with etcdctl and grpc-go's layout.

use std::time::Duration;

use courier::registry::{Registry, Revision};
use courier_tests::{
    CalculatorClient, EtcdServer, WhoamiClient,
    contract_a_kept_alive_lease_lives_and_an_abandoned_one_expires,
    contract_a_resumed_watch_gets_exactly_the_changes_since,
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

// What only some backends do. etcd's key is the address, so registering it
// again replaces it (an `Update`); the store backends refuse a live id to
// another lease instead, and limit instance sizes (etcd has its own limits).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registering_an_address_again_is_an_update() {
    let backend = etcd().await;
    let run = contract_registering_again_is_an_update(&backend.registry, "etcd");
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
    let err = courier::registry::connect("zookeeper://h:2181").await.expect_err("unknown scheme");
    assert!(err.to_string().contains("unknown scheme `zookeeper`"), "{err}");
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
