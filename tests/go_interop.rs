//! Real Go peers against courier: programs under `tests/go/`, built with
//! Debian's Go and Go libraries (`courier_tests::go`).
//!
//! - `etcd_roundrobin`: a grpc-go client (grpc-go 1.33, etcd 3.4's naming
//!   resolver) that finds courier providers registered in etcd and spreads
//!   its calls over them with `round_robin`.

use std::time::{Duration, Instant};

use courier_tests::go::{self, GoBinary, GoOutput};
use courier_tests::{EtcdServer, Named, WhoamiServer, start_provider, within};
use serde::Deserialize;

/// Every etcd test as a whole, the first build of grpc-go and etcd's Go
/// client included: a hang fails its test instead of the suite.
const GO_TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// What `etcd_roundrobin` prints.
#[derive(Debug, Deserialize)]
struct Summary {
    warmup: usize,
    answers: std::collections::BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// Build the grpc-go client (a second or so once Go's cache is warm; each
/// test owns its copy, removed when it ends).
async fn etcd_roundrobin() -> GoBinary {
    go::build(&go::program("etcd_roundrobin")).await.unwrap_or_else(|err| panic!("{err}"))
}

/// Run the grpc-go client against `Whoami` in `etcd`.
async fn call_whoami(client: &GoBinary, etcd: &EtcdServer, calls: usize, expect: usize) -> GoOutput {
    let (calls, expect) = (calls.to_string(), expect.to_string());
    let args = ["-etcd", &etcd.endpoint, "-service", "Whoami", "-method", "/Whoami/Name"];
    let args = [&args[..], &["-calls", &calls, "-expect", &expect, "-timeout", "60s"]].concat();
    client.run(&args, Duration::from_secs(90)).await.unwrap_or_else(|err| panic!("{err}"))
}

/// Wait until `service` has `count` instances in `registry`.
async fn wait_for_instances(registry: &courier::registry::Registry, service: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = tokio::time::timeout(Duration::from_secs(5), registry.list(service)).await;
        if let Ok(Ok(snapshot)) = &listed
            && snapshot.instances.len() == count
        {
            return;
        }
        assert!(Instant::now() < deadline, "{service} has {count} instances within 10 s: {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_go_client_resolves_courier_providers_through_etcd_and_round_robins_over_them() {
    within(
        GO_TEST_LIMIT,
        "a_grpc_go_client_resolves_courier_providers_through_etcd_and_round_robins_over_them",
        async {
            // Build first: the first build of grpc-go and etcd's client is slow,
            // and nothing waits on it meanwhile.
            let client = etcd_roundrobin().await;
            let etcd = EtcdServer::start();
            let registry =
                courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
            let a = start_provider(&registry, "provider-a", |b| b).await;
            let b = start_provider(&registry, "provider-b", |b| b).await;
            wait_for_instances(&registry, "Whoami", 2).await;

            let calls = 200;
            let output = call_whoami(&client, &etcd, calls, 2).await;
            assert!(
                output.status.success(),
                "the grpc-go client failed ({}):\nstdout: {}\nstderr: {}",
                output.status,
                output.stdout,
                output.stderr
            );
            let summary: Summary =
                output.stdout.lines().last().and_then(|line| serde_json::from_str(line).ok()).unwrap_or_else(
                    || panic!("a summary line, got {:?}; stderr: {}", output.stdout, output.stderr),
                );
            eprintln!("grpc-go round_robin through etcd over two courier providers: {summary:?}");
            assert!(summary.failures.is_empty(), "no call failed: {summary:?}");
            let names: Vec<&str> = summary.answers.keys().map(String::as_str).collect();
            assert_eq!(names, ["provider-a", "provider-b"], "both providers answered: {summary:?}");
            assert_eq!(summary.answers.values().sum::<usize>(), calls, "{summary:?}");
            // round_robin alternates once both connections are ready; allow for a
            // connection that flapped during the run.
            for (name, count) in &summary.answers {
                assert!(*count >= calls / 4, "{name} took {count} of {calls} calls: {summary:?}");
            }
            assert!(summary.warmup >= 2, "{summary:?}");

            a.shutdown().await.expect("stop a");
            b.shutdown().await.expect("stop b");
        },
    )
    .await;
}

/// The control: courier's earlier layout, with its fields in `Metadata`,
/// is what makes grpc-go's round_robin panic (etcd-io/etcd#19700,
/// grpc/grpc-go#8225), so the test above can tell the layouts apart. The
/// old entries still route courier consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_fields_in_metadata_make_grpc_go_panic_and_still_route_courier() {
    within(GO_TEST_LIMIT, "courier_fields_in_metadata_make_grpc_go_panic_and_still_route_courier", async {
        let client = etcd_roundrobin().await;
        let etcd = EtcdServer::start();
        let registry =
            courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
        let server = courier::Server::builder()
            .add_service(WhoamiServer::new(Named("old-layout".to_owned())))
            .bind("127.0.0.1:0")
            .await
            .expect("bind")
            .start();
        let addr = server.local_addr().to_string();
        let old = format!(
            r#"{{"Op":0,"Addr":"{addr}","Metadata":{{"courier":{{"version":"1.0.0","weight":2}}}}}}"#
        );
        let put = etcd.etcdctl(&["put", &format!("Whoami/{addr}"), &old]);
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));

        let listed = registry.list("Whoami").await.expect("list");
        let found: Vec<_> =
            listed.instances.iter().map(|i| (i.addr.as_str(), i.version.as_str(), i.weight)).collect();
        assert_eq!(found, [(addr.as_str(), "1.0.0", 2)], "courier reads the old layout");

        let output = call_whoami(&client, &etcd, 10, 1).await;
        assert!(
            !output.status.success() && output.stderr.contains("hash of unhashable type"),
            "grpc-go 1.33 panics on a JSON object in Metadata (if it no longer does, this control is moot); \
             status {}\nstdout: {}\nstderr: {}",
            output.status,
            output.stdout,
            output.stderr
        );
        server.shutdown().await.expect("stop");
    })
    .await;
}

/// A Go program written into a temporary directory.
fn temp_program(source: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("main.go"), source).expect("write main.go");
    dir
}

#[tokio::test]
async fn a_missing_go_library_is_a_clear_error_naming_its_debian_package() {
    let program = temp_program(
        "package main\n\nimport _ \"google.golang.org/grpc/no/such/package\"\n\nfunc main() {}\n",
    );
    let err = go::build(program.path()).await.expect_err("the import does not exist");
    let message = err.to_string();
    assert!(
        matches!(&err, go::GoError::PackageMissing { import, package, .. }
            if import == "google.golang.org/grpc/no/such/package" && package == "golang-google-grpc-dev"),
        "{message}"
    );
    assert!(message.contains("install golang-google-grpc-dev"), "{message}");
}

#[tokio::test]
async fn a_go_program_runs_with_arguments_and_is_killed_at_its_timeout() {
    let program = temp_program(
        "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"time\"\n)\n\nfunc main() {\n\
         \tfmt.Println(os.Args[1])\n\tif os.Args[1] == \"hang\" {\n\t\ttime.Sleep(time.Hour)\n\t}\n\
         \tfmt.Fprintln(os.Stderr, \"to stderr\")\n\tos.Exit(3)\n}\n",
    );
    let binary = go::build(program.path()).await.unwrap_or_else(|err| panic!("{err}"));
    let output = binary.run(&["hello"], Duration::from_secs(30)).await.unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        (output.status.code(), output.stdout.as_str(), output.stderr.as_str()),
        (Some(3), "hello\n", "to stderr\n")
    );

    let started = Instant::now();
    let err = binary.run(&["hang"], Duration::from_secs(1)).await.expect_err("it never exits");
    assert!(matches!(err, go::GoError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout ended it: {:?}", started.elapsed());

    // A long-running peer: read its output, then it is killed on drop.
    let mut peer = binary.spawn(&["hang"]).unwrap_or_else(|err| panic!("{err}"));
    let line = peer.next_line(Duration::from_secs(30)).await.unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(line.as_deref(), Some("hang"));
    let pid = peer.id().expect("running");
    drop(peer);
    let gone = courier_tests::eventually(Duration::from_secs(10), || {
        // A killed child not yet reaped is a zombie: state `Z`.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    })
    .await;
    assert!(gone, "the dropped peer {pid} was killed");
}
