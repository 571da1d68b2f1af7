//! Every registry backend passes the same contract (`registry_contract`).

use std::time::Duration;

use courier_tests::{
    CalculatorClient, EtcdServer, WhoamiClient, eventually, registry_contract, registry_ownership_contract,
    start_provider,
};

#[tokio::test]
async fn mem_registry_follows_the_contract() {
    let registry = courier::registry::connect("mem://").await.expect("connect");
    registry_contract(&registry, "mem").await;
}

#[tokio::test]
async fn mem_registry_refuses_takeovers_and_oversized_instances() {
    let registry = courier::registry::connect("mem://").await.expect("connect");
    registry_ownership_contract(&registry, "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_registry_refuses_takeovers_and_oversized_instances() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = courier_registry::open(dir.path())
        .await
        .expect("open")
        .add_to(courier::Server::builder())
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start();
    let registry =
        courier::registry::connect(&format!("courier://{}", server.local_addr())).await.expect("connect");
    registry_ownership_contract(&registry, "courier").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_registry_follows_the_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = courier_registry::open(dir.path())
        .await
        .expect("open")
        .add_to(courier::Server::builder())
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start();
    let registry =
        courier::registry::connect(&format!("courier://{}", server.local_addr())).await.expect("connect");
    registry_contract(&registry, "courier").await;
}

#[tokio::test]
async fn unknown_schemes_are_clear_errors() {
    let err = courier::registry::connect("zookeeper://h:2181").await.expect_err("unknown scheme");
    assert!(err.to_string().contains("unknown scheme `zookeeper`"), "{err}");
    let err = courier::registry::connect("127.0.0.1:7600").await.expect_err("no scheme");
    assert!(err.to_string().contains("expected scheme://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registry_follows_the_contract() {
    let etcd = EtcdServer::start();
    let registry = courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
    registry_contract(&registry, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_entries_interoperate_with_etcdctl_and_the_grpc_go_layout() {
    let etcd = EtcdServer::start();
    let registry = courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");

    // A server registered by hand, as a Go service or an operator would.
    let (server, _) = courier_tests::start_server(|b| b).await;
    let addr = server.local_addr().to_string();
    let put = etcd.etcdctl(&["put", &format!("Calculator/{addr}"), &format!(r#"{{"Addr":"{addr}"}}"#)]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let calc =
        CalculatorClient::discover(&registry, "Calculator").no_cache().build().await.expect("discover");
    assert!(
        eventually(Duration::from_secs(5), || calc.channel().instances().is_some_and(|i| i.len() == 1)).await
    );
    assert_eq!(calc.add(2, 3).await.expect("routed to the etcdctl entry"), 5);

    // An entry keyed by a name, not its address: the key names the instance,
    // so deleting the key removes it.
    let (named, _) = courier_tests::start_server(|b| b).await;
    let named_addr = named.local_addr().to_string();
    let put = etcd.etcdctl(&["put", "Calculator/e1", &format!(r#"{{"Addr":"{named_addr}"}}"#)]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let instances = |calc: &CalculatorClient| calc.channel().instances().unwrap_or_default();
    let added = eventually(Duration::from_secs(5), || {
        instances(&calc).iter().any(|i| i.id == "e1" && i.addr == named_addr)
    })
    .await;
    assert!(added, "the named entry is discovered: {:?}", instances(&calc));
    let del = etcd.etcdctl(&["del", "Calculator/e1"]);
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
    let listed = eventually(Duration::from_secs(5), || {
        let out = etcd.etcdctl(&["get", "--prefix", "Calculator/"]);
        String::from_utf8_lossy(&out.stdout).contains(&provider_addr)
    })
    .await;
    assert!(listed, "courier's registration is visible to etcdctl");
    let out = etcd.etcdctl(&["get", &format!("Calculator/{provider_addr}"), "--print-value-only"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON value");
    assert_eq!(value["Op"], 0);
    assert_eq!(value["Addr"], provider_addr.as_str());
    // grpc-go hashes `Metadata`: null, as its own endpoints manager writes
    // it; courier's fields sit beside it.
    assert_eq!(value.get("Metadata"), Some(&serde_json::Value::Null), "{value}");
    assert_eq!(value["courier"]["version"], "1.0.0");
    // And it is under a lease: deregistering removes it.
    provider.shutdown().await.expect("graceful shutdown");
    let gone = eventually(Duration::from_secs(5), || {
        let out = etcd.etcdctl(&["get", "--prefix", "Calculator/"]);
        !String::from_utf8_lossy(&out.stdout).contains(&provider_addr)
    })
    .await;
    assert!(gone, "deregistered on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_follows_an_etcd_that_lost_its_data() {
    let etcd = EtcdServer::start();
    let registry = courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
    // Move etcd's revision well past what the empty replacement will reach.
    for i in 0..30 {
        let put = etcd.etcdctl(&["put", &format!("unrelated/{i}"), "x"]);
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    }
    let _a = start_provider(&registry, "a", |b| b).await;
    let client = WhoamiClient::discover(&registry, "Whoami").no_cache().build().await.expect("discover");
    let known = |client: &WhoamiClient| client.channel().instances().map_or(0, |i| i.len());
    assert!(eventually(Duration::from_secs(5), || known(&client) == 1).await);

    let etcd = etcd.replace_with_empty();
    // The provider re-registers when its lease is found missing; a second
    // one registers fresh. Both land at revisions below the consumer's.
    let _b = start_provider(&registry, "b", |b| b).await;
    let caught_up = eventually(Duration::from_secs(15), || known(&client) == 2).await;
    let out = etcd.etcdctl(&["get", "--prefix", "Whoami/", "--keys-only"]);
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
}
