//! The bundled registry over `courier://`, and its persistence.

use std::time::Duration;

use courier::registry::{Instance, RegistryError};

/// Run a test body under a 60 s limit: a regression fails instead of
/// hanging the suite.
async fn within_a_minute(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), body).await.expect("the test finished within 60 s");
}

async fn serve(data_dir: &std::path::Path) -> courier::ServerHandle {
    let registry = courier_registry::open(data_dir).await.expect("open the registry");
    registry.add_to(courier::Server::builder()).bind("127.0.0.1:0").await.expect("bind").start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart_with_fresh_leases() {
    within_a_minute(async {
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

        // Unrenewed, both expire as usual (TTL 2 s; allow for a loaded machine).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !registry.list("Persisted").await.expect("list").instances.is_empty() {
            assert!(std::time::Instant::now() < deadline, "both leases expired within 5 s of their last renewal");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(registry.keep_alive(&lease).await, Err(RegistryError::LeaseNotFound(lease.id)));
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable_not_a_hang() {
    within_a_minute(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let registry = courier::registry::connect(&format!("courier://127.0.0.1:{port}"))
            .await
            .expect("connect is lazy");
        let err = tokio::time::timeout(Duration::from_secs(6), registry.list("Anything"))
            .await
            .expect("no hang")
            .expect_err("nothing listens");
        assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    })
    .await;
}

/// The registry's database file in `dir`.
fn data_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("registry.redb")
}

/// Wait until nothing holds the database in `dir` open (a stopped
/// registry's writer thread lets go within a second or so), then open it.
async fn open_db_when_free(dir: &std::path::Path) -> redb::Database {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match redb::Database::create(data_file(dir)) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("the stopped registry still holds its database after 10 s: {err}"),
        }
    }
}

/// Stop the registry `server` in `dir` and wait until its database is
/// closed, then change the database with `edit`.
async fn stop_and_edit(
    server: courier::ServerHandle,
    dir: &std::path::Path,
    edit: impl FnOnce(redb::Database),
) {
    server.abort();
    edit(open_db_when_free(dir).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_file_is_refused_unless_asked_for() {
    within_a_minute(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = serve(dir.path()).await;
        let registry =
            courier::registry::connect(&format!("courier://{}", server.local_addr())).await.expect("connect");
        registry
            .register(Instance::new("Kept", "127.0.0.1:9100"), Duration::from_secs(60))
            .await
            .expect("register");
        stop_and_edit(server, dir.path(), drop).await;
        // Truncated to nothing (a full disk, a bad copy, an operator's `>`).
        std::fs::File::create(data_file(dir.path())).expect("truncate the data file");

        let err = match courier_registry::open(dir.path()).await {
            Ok(_) => panic!("an empty data file must not open as an empty registry"),
            Err(err) => err,
        };
        assert!(
            matches!(&err, courier_registry::PersistError::EmptyDataFile { path } if *path == data_file(dir.path()))
        );
        let message = err.to_string();
        assert!(
            message.contains("is empty (0 bytes)")
                && message.contains("registry.redb")
                && message.contains("--allow-empty-data"),
            "{message}"
        );
        assert_eq!(std::fs::metadata(data_file(dir.path())).expect("still there").len(), 0, "left as found");

        // Told to, it starts empty.
        let empty = courier_registry::OpenOptions::new()
            .allow_empty_data(true)
            .open(dir.path())
            .await
            .expect("an empty registry when asked for");
        assert!(empty.local().registrations(None).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_instance_was_lost_is_not_renewed_so_its_provider_registers_again() {
    within_a_minute(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = serve(dir.path()).await;
        let registry =
            courier::registry::connect(&format!("courier://{}", server.local_addr())).await.expect("connect");
        let lost = registry
            .register(Instance::new("Lossy", "127.0.0.1:9100"), Duration::from_secs(60))
            .await
            .expect("register");
        let kept = registry
            .register(Instance::new("Lossy", "127.0.0.1:9101"), Duration::from_secs(60))
            .await
            .expect("register");
        // The first instance's record is lost while the registry is down; its
        // lease's record is not.
        stop_and_edit(server, dir.path(), |db| {
            let registrations: redb::TableDefinition<'_, &str, &[u8]> =
                redb::TableDefinition::new("registrations");
            let txn = db.begin_write().expect("write");
            {
                let mut table = txn.open_table(registrations).expect("table");
                let removed = table.remove("Lossy\u{0}127.0.0.1:9100").expect("remove");
                assert!(removed.is_some(), "the record was there");
            }
            txn.commit().expect("commit");
        })
        .await;

        let server = serve(dir.path()).await;
        let registry =
            courier::registry::connect(&format!("courier://{}", server.local_addr())).await.expect("connect");
        assert_eq!(
            registry.keep_alive(&lost).await,
            Err(RegistryError::LeaseNotFound(lost.id)),
            "renewing a lease that holds nothing fails, so the provider registers again"
        );
        registry.keep_alive(&kept).await.expect("the intact lease renews");
        // And registering again works: the id is free.
        registry
            .register(Instance::new("Lossy", "127.0.0.1:9100"), Duration::from_secs(60))
            .await
            .expect("registered again");
        assert_eq!(registry.list("Lossy").await.expect("list").instances.len(), 2);
    })
    .await;
}
