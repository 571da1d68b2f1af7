//! Every registry backend passes the same contract (`registry_contract`).

use std::time::Duration;

use courier_tests::{CalculatorClient, EtcdServer, eventually, registry_contract, start_provider};

#[tokio::test]
async fn mem_registry_follows_the_contract() {
    let registry = courier::registry::connect("mem://").await.expect("connect");
    registry_contract(&registry, "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_registry_follows_the_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = courier::Server::builder()
        .add_service(courier_registry::open(dir.path()).await.expect("open").into_service())
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
    assert_eq!(value["Metadata"]["courier"]["version"], "1.0.0");
    // And it is under a lease: deregistering removes it.
    provider.shutdown().await.expect("graceful shutdown");
    let gone = eventually(Duration::from_secs(5), || {
        let out = etcd.etcdctl(&["get", "--prefix", "Calculator/"]);
        !String::from_utf8_lossy(&out.stdout).contains(&provider_addr)
    })
    .await;
    assert!(gone, "deregistered on shutdown");
}
