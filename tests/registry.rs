//! Every registry backend passes the same contract (`registry_contract`).

use courier_tests::registry_contract;

#[tokio::test]
async fn mem_registry_follows_the_contract() {
    let registry = courier::registry::connect("mem://").await.expect("connect");
    registry_contract(&registry, "mem").await;
}

#[tokio::test]
async fn unknown_schemes_are_clear_errors() {
    let err = courier::registry::connect("zookeeper://h:2181").await.expect_err("unknown scheme");
    assert!(err.to_string().contains("unknown scheme `zookeeper`"), "{err}");
    let err = courier::registry::connect("127.0.0.1:7600").await.expect_err("no scheme");
    assert!(err.to_string().contains("expected scheme://"), "{err}");
}
