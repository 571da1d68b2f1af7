//! The bundled registry over `courier://`, and its persistence.

use std::time::Duration;

use courier::registry::{Instance, RegistryError};

async fn serve(data_dir: &std::path::Path) -> courier::ServerHandle {
    let registry = courier_registry::open(data_dir).await.expect("open the registry");
    courier::Server::builder()
        .add_service(registry.into_service())
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart_with_fresh_leases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = serve(dir.path()).await;
    let url = format!("courier://{}", server.local_addr());
    let registry = courier::registry::connect(&url).await.expect("connect");
    let instance = Instance::new("Persisted", "127.0.0.1:9100").with_version("2.0.0").with_zone("z1");
    let lease = registry.register(instance.clone(), Duration::from_secs(2)).await.expect("register");
    let before = registry.list("Persisted").await.expect("list");

    // Stop it without any goodbye, wait past the TTL, start it again.
    server.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = serve(dir.path()).await;
    let registry =
        courier::registry::connect(&format!("courier://{}", server.local_addr())).await.expect("connect");
    let after = registry.list("Persisted").await.expect("list");
    assert_eq!(after.instances, vec![instance], "the instance is still there after the restart");
    // Revisions jump on restart, so a watcher resuming from before starts over
    // with a full set rather than trusting a log the restart lost.
    assert!(after.revision > before.revision);
    let mut watch = registry.watch("Persisted", Some(before.revision)).await.expect("watch");
    let first =
        tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("an event").expect("open");
    assert!(
        matches!(first, Ok(courier::registry::WatchEvent::Reset { ref instances, .. }) if instances.len() == 1),
        "{first:?}"
    );
    // Its lease got a fresh TTL and can be kept alive with the same id.
    registry.keep_alive(&lease).await.expect("the old lease is valid");

    // A new lease never reuses an old id.
    let other = registry
        .register(Instance::new("Persisted", "127.0.0.1:9101"), Duration::from_secs(2))
        .await
        .expect("register another");
    assert!(other.id > lease.id);

    // Unrenewed, both expire as usual.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(registry.list("Persisted").await.expect("list").instances.is_empty());
    assert_eq!(registry.keep_alive(&lease).await, Err(RegistryError::LeaseNotFound(lease.id)));
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable_not_a_hang() {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let registry =
        courier::registry::connect(&format!("courier://127.0.0.1:{port}")).await.expect("connect is lazy");
    let err = tokio::time::timeout(Duration::from_secs(6), registry.list("Anything"))
        .await
        .expect("no hang")
        .expect_err("nothing listens");
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
}
