//! The behaviour every registry backend must have. `tests/registry.rs`
//! runs each behaviour as its own test against each backend (`mem://`, the
//! bundled courier registry, etcd), so the first failure hides nothing.
//!
//! Every function takes the registry and a `prefix` for its service names.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use courier::registry::{Instance, Lease, Registry, RegistryError, Revision, WatchEvent, WatchStream};

use crate::load::{Load, routed, watch_smallest_view};
use crate::wait::within;

const TTL: Duration = Duration::from_secs(2);

/// How long any one registry call may take.
const LIMIT: Duration = Duration::from_secs(10);

fn instance(service: &str, port: u16) -> Instance {
    Instance::new(service, format!("127.0.0.1:{port}")).with_version("1.2.3").with_weight(2)
}

async fn register(registry: &Registry, instance: Instance) -> Lease {
    let addr = instance.addr.clone();
    within(LIMIT, "register", registry.register(instance, TTL))
        .await
        .unwrap_or_else(|err| panic!("register {addr}: {err}"))
}

/// A watch starts with the full set (a `Reset`), then sees every change, in
/// order, with increasing revisions; what is listed keeps its details.
pub async fn contract_watch_starts_with_the_full_set_then_sees_each_change(
    registry: &Registry,
    prefix: &str,
) {
    let service = format!("{prefix}Watched");
    let empty = within(LIMIT, "list", registry.list(&service)).await.expect("list");
    assert!(empty.instances.is_empty(), "nothing registered yet: {empty:?}");

    let mut watch = within(LIMIT, "watch", registry.watch(&service, None)).await.expect("watch");
    let first = next_event(&mut watch).await;
    assert!(matches!(&first, WatchEvent::Reset { instances, .. } if instances.is_empty()), "{first:?}");

    let _a = register(registry, instance(&service, 7001)).await;
    let _b = register(registry, instance(&service, 7002)).await;
    let added = [next_event(&mut watch).await, next_event(&mut watch).await];
    let added_addrs: Vec<String> = added
        .iter()
        .map(|event| match event {
            WatchEvent::Add { instance, .. } => instance.addr.clone(),
            other => panic!("expected Add, got {other:?}"),
        })
        .collect();
    assert_eq!(added_addrs, ["127.0.0.1:7001", "127.0.0.1:7002"], "in the order they were registered");
    assert!(first.revision() < added[0].revision(), "revisions increase");
    assert!(added[0].revision() < added[1].revision(), "revisions increase");

    let listed = within(LIMIT, "list", registry.list(&service)).await.expect("list");
    assert_eq!(listed.instances.len(), 2);
    let a = listed.instances.iter().find(|i| i.addr == "127.0.0.1:7001").expect("a listed");
    assert_eq!((a.version.as_str(), a.weight), ("1.2.3", 2), "details survive the round trip");
    assert!(listed.revision >= added[1].revision());
}

/// Deregistering removes the instance at once (a `Remove` with its id),
/// and the lease is gone.
pub async fn contract_deregistering_removes_at_once(registry: &Registry, prefix: &str) {
    let service = format!("{prefix}Leaving");
    let _stays = register(registry, instance(&service, 7011)).await;
    let leaves = register(registry, instance(&service, 7012)).await;
    let mut watch = within(LIMIT, "watch", registry.watch(&service, None)).await.expect("watch");
    let reset = next_event(&mut watch).await;
    assert!(matches!(&reset, WatchEvent::Reset { instances, .. } if instances.len() == 2), "{reset:?}");

    within(LIMIT, "deregister", registry.deregister(&leaves)).await.expect("deregister");
    match next_event(&mut watch).await {
        WatchEvent::Remove { id, .. } => assert_eq!(id, leaves.instance_id),
        other => panic!("expected Remove, got {other:?}"),
    }
    let listed = within(LIMIT, "list", registry.list(&service)).await.expect("list");
    let addrs: Vec<&str> = listed.instances.iter().map(|i| i.addr.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:7011"]);
    assert_eq!(
        within(LIMIT, "keep_alive", registry.keep_alive(&leaves)).await,
        Err(RegistryError::LeaseNotFound(leaves.id))
    );
}

/// A kept-alive lease outlives its TTL; an abandoned one expires (within
/// TTL + 1.5 s) and its watchers see it go.
pub async fn contract_a_kept_alive_lease_lives_and_an_abandoned_one_expires(
    registry: &Registry,
    prefix: &str,
) {
    let service = format!("{prefix}Leased");
    let kept = register(registry, instance(&service, 7021)).await;
    let abandoned = register(registry, instance(&service, 7022)).await;
    let mut watch = within(LIMIT, "watch", registry.watch(&service, None)).await.expect("watch");
    let _reset = next_event(&mut watch).await;
    let started = Instant::now();
    while started.elapsed() < TTL + Duration::from_millis(1500) {
        within(LIMIT, "keep_alive", registry.keep_alive(&kept)).await.expect("keep alive");
        tokio::time::sleep(TTL / 4).await;
    }
    let remaining = within(LIMIT, "list", registry.list(&service)).await.expect("list");
    let addrs: Vec<&str> = remaining.instances.iter().map(|i| i.addr.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:7021"], "the abandoned lease expired, the kept one lives");
    match next_event(&mut watch).await {
        WatchEvent::Remove { id, .. } => assert_eq!(id, abandoned.instance_id),
        other => panic!("expected the abandoned instance's Remove, got {other:?}"),
    }
}

/// A watch resumed from a revision it saw gets exactly the changes since,
/// in order (never a `Reset`: the backend keeps that history), then the
/// changes that follow.
pub async fn contract_a_resumed_watch_gets_exactly_the_changes_since(registry: &Registry, prefix: &str) {
    let service = format!("{prefix}Resumed");
    let first = register(registry, instance(&service, 7031)).await;
    let seen = within(LIMIT, "list", registry.list(&service)).await.expect("list").revision;

    // What happens while the watcher is away.
    let second = register(registry, instance(&service, 7032)).await;
    within(LIMIT, "deregister", registry.deregister(&first)).await.expect("deregister");
    let _third = register(registry, instance(&service, 7033)).await;

    let mut resumed = within(LIMIT, "resume", registry.watch(&service, Some(seen))).await.expect("resume");
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(next_event(&mut resumed).await);
    }
    let described: Vec<String> = missed
        .iter()
        .map(|event| match event {
            WatchEvent::Add { instance, .. } => format!("add {}", instance.addr),
            WatchEvent::Remove { id, .. } => format!("remove {id}"),
            other => panic!("resuming from {seen} must give the changes since, not {other:?}"),
        })
        .collect();
    assert_eq!(
        described,
        [
            "add 127.0.0.1:7032".to_owned(),
            format!("remove {}", first.instance_id),
            "add 127.0.0.1:7033".to_owned()
        ],
        "the three changes since revision {seen}, in order"
    );
    assert!(missed[0].revision() > seen, "nothing at or before the revision resumed from");
    assert!(missed.windows(2).all(|pair| pair[0].revision() < pair[1].revision()), "{missed:?}");

    // Resumed from the last change, it sees the next one, and only that.
    let latest = missed[2].revision();
    let mut current = within(LIMIT, "resume", registry.watch(&service, Some(latest))).await.expect("resume");
    within(LIMIT, "deregister", registry.deregister(&second)).await.expect("deregister");
    match next_event(&mut current).await {
        WatchEvent::Remove { id, revision } => {
            assert_eq!(id, second.instance_id);
            assert!(revision > latest);
        }
        other => panic!("resuming from the latest revision must give the next change, got {other:?}"),
    }
}

/// Registering an instance again (the same address, new details) is an
/// `Update` to its watchers, and the listing has the new details once.
/// Only for backends that allow it: etcd (the key is the address, a put
/// replaces it). `mem://` and the courier registry refuse a second
/// registration of a live id instead (`contract_ownership`), so no API
/// call produces an `Update` there.
pub async fn contract_registering_again_is_an_update(registry: &Registry, prefix: &str) {
    let service = format!("{prefix}Updated");
    let _old = register(registry, instance(&service, 7041)).await;
    let mut watch = within(LIMIT, "watch", registry.watch(&service, None)).await.expect("watch");
    let reset = next_event(&mut watch).await;
    assert!(matches!(&reset, WatchEvent::Reset { instances, .. } if instances.len() == 1), "{reset:?}");

    let changed = instance(&service, 7041).with_weight(7).with_version("1.3.0").with_zone("z9");
    let new = register(registry, changed).await;
    match next_event(&mut watch).await {
        WatchEvent::Update { instance, revision } => {
            assert_eq!((instance.weight, instance.version.as_str()), (7, "1.3.0"), "{instance:?}");
            assert_eq!(instance.zone.as_deref(), Some("z9"));
            assert!(revision > reset.revision());
        }
        other => panic!("registering 127.0.0.1:7041 again must be an Update, got {other:?}"),
    }
    let listed = within(LIMIT, "list", registry.list(&service)).await.expect("list");
    assert_eq!(listed.instances.len(), 1, "one instance, not two: {listed:?}");
    assert_eq!(listed.instances[0].weight, 7);
    within(LIMIT, "deregister", registry.deregister(&new)).await.expect("deregister");
}

/// A watch resumed from a revision older than the backend keeps gets a
/// complete `Reset` (exactly what a listing says), then changes again.
/// `compact` makes the backend forget the history of `service` up to the
/// revision it is given (etcd: `etcdctl compact`; the store backends:
/// [`overflow_event_log`]).
pub async fn contract_a_watch_resumed_from_before_compaction_gets_a_complete_reset(
    registry: &Registry,
    prefix: &str,
    compact: impl AsyncFnOnce(String, Revision),
) {
    let service = format!("{prefix}Compacted");
    let gone = register(registry, instance(&service, 7051)).await;
    let seen = within(LIMIT, "list", registry.list(&service)).await.expect("list").revision;
    let _stays = register(registry, instance(&service, 7052)).await;
    within(LIMIT, "deregister", registry.deregister(&gone)).await.expect("deregister");
    let latest = within(LIMIT, "list", registry.list(&service)).await.expect("list").revision;
    compact(service.clone(), latest).await;

    let listed = within(LIMIT, "list", registry.list(&service)).await.expect("list");
    let mut resumed = within(LIMIT, "resume", registry.watch(&service, Some(seen))).await.expect("resume");
    match next_event(&mut resumed).await {
        WatchEvent::Reset { instances, revision } => {
            let ids = |instances: &[Instance]| -> BTreeSet<String> {
                instances.iter().map(|i| i.id.clone()).collect()
            };
            assert_eq!(ids(&instances), ids(&listed.instances), "the Reset is the complete set");
            assert!(!ids(&instances).contains(&gone.instance_id), "without what was removed meanwhile");
            assert!(revision >= listed.revision, "the Reset is at least as new as the listing");
        }
        other => panic!("history before {latest} was compacted: expected a Reset, got {other:?}"),
    }
    // Then changes are incremental again.
    let after = register(registry, instance(&service, 7053)).await;
    match next_event(&mut resumed).await {
        WatchEvent::Add { instance, .. } => assert_eq!(instance.addr, "127.0.0.1:7053"),
        other => panic!("expected the Add after the Reset, got {other:?}"),
    }
    within(LIMIT, "deregister", registry.deregister(&after)).await.expect("deregister");
}

/// Fill `service`'s event log past its byte bound
/// (`courier::registry::mem::store::EVENT_LOG_BYTES`) with large instances,
/// so the store backends (`mem://`, the courier registry) drop its oldest
/// events: their way of compacting. The instances stay registered (for
/// five minutes).
pub async fn overflow_event_log(registry: &Registry, service: &str) {
    const BLOB: usize = 60_000;
    let count = courier::registry::mem::store::EVENT_LOG_BYTES / BLOB + 8;
    for i in 0..count {
        let big = Instance::new(service, format!("10.77.0.{i}:9000"))
            .with_id(format!("filler-{i:03}"))
            .with_metadata("blob", "x".repeat(BLOB));
        within(LIMIT, "register a filler", registry.register(big, Duration::from_secs(300)))
            .await
            .expect("register a filler");
    }
}

/// Listings for `courier ls` name every registration; nonsense is refused.
pub async fn contract_registrations_are_listed_and_nonsense_is_refused(registry: &Registry, prefix: &str) {
    let service = format!("{prefix}Listed");
    let a = register(registry, instance(&service, 7061)).await;
    let b = register(registry, instance(&service, 7062)).await;
    let registrations =
        within(LIMIT, "registrations", registry.registrations(Some(&service))).await.expect("registrations");
    let mut addrs: Vec<&str> = registrations.iter().map(|r| r.instance.addr.as_str()).collect();
    addrs.sort_unstable();
    assert_eq!(addrs, ["127.0.0.1:7061", "127.0.0.1:7062"]);
    assert!(registrations.iter().all(|r| r.registered_unix_ms > 0));
    let leases: BTreeSet<u64> = registrations.iter().map(|r| r.lease).collect();
    assert_eq!(leases, BTreeSet::from([a.id, b.id]), "each under its own lease");

    let bad = Instance::new(service.clone(), "no-port");
    assert!(
        within(LIMIT, "register", registry.register(bad, TTL)).await.is_err(),
        "an address without a port"
    );
    within(LIMIT, "deregister", registry.deregister(&a)).await.expect("deregister a");
    within(LIMIT, "deregister", registry.deregister(&b)).await.expect("deregister b");
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

/// The next event of `watch`, within 5 s; panics if the watch ends or errs.
pub async fn next_event(watch: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("the watch is still open")
        .expect("no watch error")
}

/// A provider process SIGKILLed (no deregistration: its lease just stops
/// being renewed) is gone from consumers within its TTL + 1 s; one stopped
/// gracefully is gone at once, as it deregisters; the one left keeps
/// serving. `url` reaches the same registry from another process (the
/// test server `binary`, which registers `Whoami` under a 2 s TTL).
pub async fn contract_a_killed_provider_goes_within_its_ttl_and_a_stopped_one_at_once(
    registry: &Registry,
    url: &str,
    binary: &'static str,
) {
    let ttl = Duration::from_secs(2);
    let args = [
        "--registry".to_owned(),
        url.to_owned(),
        "--name".into(),
        "victim".into(),
        "--ttl-ms".into(),
        "2000".into(),
    ];
    let victim = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::ChildServer::start_anywhere(binary, &args)
    })
    .await
    .expect("start the test server");
    let _stays = crate::start_provider(registry, "stays", |b| b).await;
    let leaves = crate::start_provider(registry, "leaves", |b| b).await;
    let client =
        crate::WhoamiClient::discover(registry, "Whoami").no_cache().build().await.expect("discover");
    assert!(
        crate::eventually(Duration::from_secs(10), || routed(&client) == 3).await,
        "three providers discovered"
    );

    // Stopped gracefully: deregistered, gone from the consumer at once.
    let stopping = Instant::now();
    let shutdown = tokio::spawn(leaves.shutdown());
    let gone = crate::eventually(Duration::from_millis(500), || routed(&client) == 2).await;
    let took = stopping.elapsed();
    assert!(gone, "a stopped provider is gone within 500 ms: {:?}", client.channel().instances());
    shutdown.await.expect("shutdown task").expect("graceful shutdown");

    // SIGKILLed: its lease runs out.
    let killed = Instant::now();
    tokio::task::spawn_blocking(move || victim.kill()).await.expect("kill the test server");
    let gone = crate::eventually(ttl + Duration::from_secs(1), || routed(&client) == 1).await;
    let expired = killed.elapsed();
    assert!(gone, "a killed provider is gone within TTL + 1 s: {:?}", client.channel().instances());
    eprintln!("stopped provider gone after {took:?}, killed one after {expired:?} (TTL {ttl:?})");
    for _ in 0..10 {
        assert_eq!(within(LIMIT, "a call", client.name()).await.expect("call"), "stays");
    }
}

/// The registry's server crashes and comes back (`restart` kills it and
/// starts it again on its port and data) while a consumer calls a
/// discovered service from four tasks: no call fails, the consumer never
/// loses an instance, both providers are registered again (renewed or
/// re-registered) a TTL after, and a watch opened before the crash follows
/// what happens after it.
pub async fn contract_a_restart_under_load_fails_no_call<F, Fut>(registry: &Registry, restart: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let p1 = crate::start_provider(registry, "p1", |b| b).await;
    let p2 = crate::start_provider(registry, "p2", |b| b).await;
    let client =
        crate::WhoamiClient::discover(registry, "Whoami").no_cache().build().await.expect("discover");
    assert!(crate::eventually(Duration::from_secs(10), || routed(&client) == 2).await);
    let mut watch = within(LIMIT, "watch", registry.watch("Whoami", None)).await.expect("watch");
    match next_event(&mut watch).await {
        WatchEvent::Reset { instances, .. } => assert_eq!(instances.len(), 2),
        other => panic!("expected the full set first, got {other:?}"),
    }

    let load = Load::start(&client, 4);
    let (stop_watching, smallest) = watch_smallest_view(&client);
    assert!(load.wait_for_calls(50).await, "calls flow before the crash");

    restart().await;
    // Past a TTL after the restart: providers must have renewed (or
    // registered again).
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    let mut expected = vec![p1.local_addr().to_string(), p2.local_addr().to_string()];
    expected.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = within(LIMIT, "list", registry.list("Whoami")).await;
        let mut addrs: Vec<String> =
            listed.iter().flat_map(|snapshot| snapshot.instances.iter().map(|i| i.addr.clone())).collect();
        addrs.sort_unstable();
        if addrs == expected {
            break;
        }
        assert!(Instant::now() < deadline, "both providers are registered after the restart: {addrs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The watch opened before the crash follows, as a consumer follows
    // one: it may report the break (an error item) or end, and is then
    // opened again from the last revision it showed. A provider arriving
    // now is seen, and nothing went away meanwhile.
    let p3 = crate::start_provider(registry, "p3", |b| b).await;
    let p3_addr = p3.local_addr().to_string();
    let seen = within(Duration::from_secs(20), "the watch to see p3", async {
        let mut last = None;
        loop {
            let event = match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
                Ok(Some(Ok(event))) => event,
                Ok(Some(Err(err))) => {
                    eprintln!("the watch reported the break: {err}");
                    continue;
                }
                Ok(None) | Err(_) => {
                    watch = within(LIMIT, "watch again", registry.watch("Whoami", last))
                        .await
                        .expect("watch again");
                    continue;
                }
            };
            last = Some(event.revision());
            match event {
                WatchEvent::Add { instance, .. } | WatchEvent::Update { instance, .. }
                    if instance.addr == p3_addr =>
                {
                    return;
                }
                WatchEvent::Reset { instances, .. } if instances.iter().any(|i| i.addr == p3_addr) => return,
                WatchEvent::Reset { instances, .. } => {
                    assert!(instances.len() >= 2, "a Reset after the restart lost instances: {instances:?}");
                }
                _ => {}
            }
        }
    });
    seen.await;
    assert!(
        crate::eventually(Duration::from_secs(10), || routed(&client) == 3).await,
        "the consumer sees p3"
    );

    let (calls, failures) = load.finish().await;
    stop_watching.store(true, std::sync::atomic::Ordering::SeqCst);
    let smallest = within(Duration::from_secs(5), "the view watcher", smallest).await.expect("watcher");
    assert_eq!(failures, 0, "no call failed during or after the restart");
    assert!(calls > 200, "calls kept flowing: {calls}");
    assert_eq!(smallest, 2, "the consumer never lost an instance");
}
