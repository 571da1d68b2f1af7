//! The behaviour every registry backend must have (`tests/registry.rs`
//! runs it against each).

use std::time::{Duration, Instant};

/// The behaviour every registry backend must have, run against `registry`.
/// Uses service names prefixed with `prefix` so runs do not collide.
pub async fn registry_contract(registry: &courier::registry::Registry, prefix: &str) {
    use courier::registry::{Instance, RegistryError, WatchEvent};

    let service = format!("{prefix}Contract");
    let instance = |port: u16| {
        Instance::new(service.clone(), format!("127.0.0.1:{port}")).with_version("1.2.3").with_weight(2)
    };
    let ttl = Duration::from_secs(2);

    // Nothing registered yet.
    let empty = registry.list(&service).await.expect("list");
    assert!(empty.instances.is_empty());

    // A watch starts with the full set, then sees every change in order.
    let mut watch = registry.watch(&service, None).await.expect("watch");
    let first = next_event(&mut watch).await;
    assert!(matches!(&first, WatchEvent::Reset { instances, .. } if instances.is_empty()), "{first:?}");

    let lease_a = registry.register(instance(7001), ttl).await.expect("register a");
    let lease_b = registry.register(instance(7002), ttl).await.expect("register b");
    let added = [next_event(&mut watch).await, next_event(&mut watch).await];
    let mut added_addrs: Vec<String> = added
        .iter()
        .map(|event| match event {
            WatchEvent::Add { instance, .. } => instance.addr.clone(),
            other => panic!("expected Add, got {other:?}"),
        })
        .collect();
    added_addrs.sort();
    assert_eq!(added_addrs, ["127.0.0.1:7001", "127.0.0.1:7002"]);
    assert!(added[0].revision() < added[1].revision(), "revisions increase");

    let listed = registry.list(&service).await.expect("list");
    assert_eq!(listed.instances.len(), 2);
    let a = listed.instances.iter().find(|i| i.addr == "127.0.0.1:7001").expect("a listed");
    assert_eq!((a.version.as_str(), a.weight), ("1.2.3", 2), "details survive the round trip");
    assert!(listed.revision >= added[1].revision());

    // Deregistration removes at once.
    registry.deregister(&lease_b).await.expect("deregister");
    match next_event(&mut watch).await {
        WatchEvent::Remove { id, .. } => assert_eq!(id, lease_b.instance_id),
        other => panic!("expected Remove, got {other:?}"),
    }
    assert_eq!(registry.keep_alive(&lease_b).await, Err(RegistryError::LeaseNotFound(lease_b.id)));

    // A kept-alive lease outlives its TTL; an abandoned one expires.
    let lease_c = registry.register(instance(7003), ttl).await.expect("register c");
    let _ = next_event(&mut watch).await;
    let started = Instant::now();
    while started.elapsed() < ttl + Duration::from_millis(1500) {
        registry.keep_alive(&lease_a).await.expect("keep a alive");
        tokio::time::sleep(ttl / 4).await;
    }
    let remaining = registry.list(&service).await.expect("list");
    let addrs: Vec<&str> = remaining.instances.iter().map(|i| i.addr.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:7001"], "c expired within TTL + 1.5 s, a was kept alive");
    match next_event(&mut watch).await {
        WatchEvent::Remove { id, .. } => assert_eq!(id, lease_c.instance_id),
        other => panic!("expected c's Remove, got {other:?}"),
    }

    // A new watch can resume from a revision it saw.
    let revision = remaining.revision;
    let lease_d = registry.register(instance(7004), ttl).await.expect("register d");
    let mut resumed = registry.watch(&service, Some(revision)).await.expect("resume");
    match next_event(&mut resumed).await {
        WatchEvent::Add { instance, .. } => assert_eq!(instance.addr, "127.0.0.1:7004"),
        WatchEvent::Reset { instances, .. } => assert_eq!(instances.len(), 2, "a reset must be complete"),
        other => panic!("expected the change since {revision}, got {other:?}"),
    }

    // Listings for `courier ls`.
    let registrations = registry.registrations(Some(&service)).await.expect("registrations");
    assert_eq!(registrations.len(), 2);
    assert!(registrations.iter().all(|r| r.registered_unix_ms > 0));

    // Nonsense is refused.
    let bad = Instance::new(service.clone(), "no-port");
    assert!(registry.register(bad, ttl).await.is_err());

    registry.deregister(&lease_a).await.expect("deregister a");
    registry.deregister(&lease_d).await.expect("deregister d");
}

/// What a registry must refuse, run against `registry` (`mem://` and the
/// courier registry; see `tests/registry.rs`): an instance id another live
/// lease holds is never silently moved (`AlreadyExists`), and instances
/// over the size limit are refused (`Rejected`, `InvalidArgument` on the
/// wire) while those at it are fine. Service names are prefixed with
/// `prefix`.
pub async fn registry_ownership_contract(registry: &courier::registry::Registry, prefix: &str) {
    use courier::discovery::instance::MAX_INSTANCE_BYTES;
    use courier::registry::{Instance, RegistryError};

    let service = format!("{prefix}Owned");
    let ttl = Duration::from_secs(5);
    let first = Instance::new(service.clone(), "127.0.0.1:7101").with_id("shared-id").with_weight(1);
    let lease = registry.register(first.clone(), ttl).await.expect("register the first");

    // Another provider with the same id, while the first lease lives.
    let second = Instance::new(service.clone(), "127.0.0.1:7102").with_id("shared-id").with_weight(9);
    let refused = registry.register(second.clone(), ttl).await;
    assert_eq!(
        refused.map(|lease| lease.id),
        Err(RegistryError::AlreadyExists { service: service.clone(), id: "shared-id".to_owned() }),
        "a live lease's instance is not taken over"
    );
    // The first still holds it, unchanged, and renewing it still means
    // something.
    let listed = registry.list(&service).await.expect("list");
    assert_eq!(listed.instances, vec![first.clone()]);
    registry.keep_alive(&lease).await.expect("the first lease still holds its instance");
    // Once it is gone, the id is free.
    registry.deregister(&lease).await.expect("deregister");
    let taken = registry.register(second.clone(), ttl).await.expect("the id is free now");
    assert_eq!(registry.list(&service).await.expect("list").instances, vec![second]);
    registry.deregister(&taken).await.expect("deregister");

    // Size: the 9 MiB of metadata is refused with the reason; an
    // instance right at the limit is accepted.
    let huge = Instance::new(service.clone(), "127.0.0.1:7103").with_metadata("blob", "x".repeat(9 << 20));
    match registry.register(huge, ttl).await {
        Err(RegistryError::Rejected(reason)) => {
            assert!(reason.contains("over the limit of 65536") && reason.contains("metadata"), "{reason}");
        }
        other => panic!("a 9 MiB instance must be rejected, got {other:?}"),
    }
    let base = Instance::new(service.clone(), "127.0.0.1:7104").with_metadata("blob", "");
    let fitting = base.clone().with_metadata("blob", "x".repeat(MAX_INSTANCE_BYTES - base.encoded_len()));
    let lease = registry.register(fitting, ttl).await.expect("an instance at the limit is accepted");
    registry.deregister(&lease).await.expect("deregister");
}

async fn next_event(watch: &mut courier::registry::WatchStream) -> courier::registry::WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("the watch is still open")
        .expect("no watch error")
}
