//! Discovery beyond courier's own protocol: a consumer finds, through the
//! courier registry and through etcd, instances it must call over gRPC,
//! and balances over them:
//!
//! - (a) courier servers that offer gRPC only;
//! - (b) Python grpcio servers registered with protocol `grpc`;
//! - (c) entries that name no protocol (as `etcdctl` and grpc-go write
//!   them) pointing at grpcio servers, with the consumer told to prefer
//!   gRPC for those.
//!
//! Each grpcio server is named and answers `Echo` with the response header
//! `x-served-by`, which a client layer tallies: that says which server
//! answered each call, and shows that layers see gRPC response metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::client::{Call, Layer, Next, Outcome};
use courier::registry::{Instance, Lease, Registry};
use courier::service::BoxFuture;
use courier::{Channel, Code, Protocol, ServerHandle};
use courier_tests::interop::{EchoRequest, InteropClient};
use courier_tests::python::PythonServer;
use courier_tests::{
    CalculatorClient, EtcdServer, WhoamiClient, eventually, start_provider, start_registry, within,
};

/// The grpcio servers' service, as their stubs name it.
const INTEROP: &str = "interop.Interop";
/// Calls per test, spread over two instances.
const CALLS: usize = 40;
/// How long one test may take (two Python servers start in it).
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// A registry under test and what keeps it running.
struct Backend {
    registry: Registry,
    peer: Peer,
}

enum Peer {
    Courier { _server: ServerHandle, _data: tempfile::TempDir },
    Etcd(EtcdServer),
}

async fn courier_registry() -> Backend {
    let data = tempfile::tempdir().expect("registry data dir");
    let server = start_registry(data.path()).await;
    let registry =
        courier::registry::connect(&format!("courier://{}", server.local_addr())).await.expect("connect");
    Backend { registry, peer: Peer::Courier { _server: server, _data: data } }
}

async fn etcd_registry() -> Backend {
    let etcd = EtcdServer::launch().await;
    let registry = courier::registry::connect(&format!("etcd://{}", etcd.endpoint)).await.expect("connect");
    Backend { registry, peer: Peer::Etcd(etcd) }
}

/// Tallies the `x-served-by` response header of every call.
#[derive(Default)]
struct ServedBy(Mutex<HashMap<String, usize>>);

impl ServedBy {
    fn counts(&self) -> HashMap<String, usize> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Layer for ServedBy {
    fn call<'a>(&'a self, call: &'a mut Call<'_>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let outcome = next.run(call).await;
            let by = outcome.metadata().get("x-served-by").unwrap_or("(no header)").to_owned();
            *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(by).or_default() += 1;
            outcome
        })
    }
}

fn known(channel: &Channel) -> usize {
    channel.instances().map_or(0, |instances| instances.len())
}

/// Two named grpcio servers, started side by side.
async fn two_grpcio_servers() -> [PythonServer; 2] {
    let (one, two) = tokio::join!(PythonServer::start_named("py-1"), PythonServer::start_named("py-2"));
    [one, two]
}

fn addr_of(server: &PythonServer) -> String {
    format!("127.0.0.1:{}", server.port)
}

/// Register `servers` as instances of the interop service offering
/// `protocols`, as a provider that is not courier would (the leases
/// outlive the test).
async fn register(registry: &Registry, servers: &[PythonServer], protocols: &[&str]) -> Vec<Lease> {
    let mut leases = Vec::new();
    for server in servers {
        let mut instance = Instance::new(INTEROP, addr_of(server)).with_version("1.0.0");
        instance.protocols = protocols.iter().map(|&p| p.to_owned()).collect();
        leases.push(registry.register(instance, Duration::from_secs(300)).await.expect("register"));
    }
    leases
}

/// Echo `CALLS` times through `client`; every call must succeed.
async fn echo_all(client: &InteropClient) {
    for i in 0..CALLS {
        let message = format!("call {i}");
        let reply = client
            .echo(EchoRequest { message: message.clone(), payload: vec![1, 2, 3], echo_metadata: vec![] })
            .await
            .unwrap_or_else(|err| panic!("{message}: {err}"));
        assert_eq!(reply.message, message);
        assert_eq!(reply.payload, vec![1, 2, 3]);
    }
}

/// Both grpcio servers answered, about half the calls each (round robin).
fn assert_balanced(served: &ServedBy) {
    let counts = served.counts();
    assert_eq!(counts.values().sum::<usize>(), CALLS, "{counts:?}");
    for name in ["py-1", "py-2"] {
        let share = counts.get(name).copied().unwrap_or(0);
        assert!(
            (CALLS / 4..=3 * CALLS / 4).contains(&share),
            "{name} answered {share} of {CALLS}: {counts:?}"
        );
    }
}

/// (a): courier servers with gRPC as their only protocol register it, and
/// a consumer calls them over gRPC (natively they answer nothing).
async fn grpc_only_courier_servers(backend: Backend) {
    let registry = &backend.registry;
    let a = start_provider(registry, "a", |b| b.protocols([Protocol::Grpc])).await;
    let _b = start_provider(registry, "b", |b| b.protocols([Protocol::Grpc])).await;
    let client = WhoamiClient::discover(registry, "Whoami").no_cache().build().await.expect("discover");
    assert!(
        eventually(Duration::from_secs(10), || known(client.channel()) == 2).await,
        "both discovered: {:?}",
        client.channel().instances()
    );
    for instance in client.channel().instances().unwrap_or_default() {
        assert_eq!(instance.protocols, ["grpc"], "{instance}");
    }
    // Natively they answer nothing, so the calls below went over gRPC.
    let native = WhoamiClient::new(Channel::lazy(a.local_addr().to_string()));
    let refused = native.name().await.expect_err("a gRPC-only server refuses the native protocol");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..CALLS {
        *counts.entry(client.name().await.expect("a call over gRPC")).or_default() += 1;
    }
    assert_eq!(counts.get("a"), Some(&(CALLS / 2)), "round robin over both: {counts:?}");
    assert_eq!(counts.get("b"), Some(&(CALLS / 2)), "round robin over both: {counts:?}");
}

/// (b): grpcio servers registered with protocol `grpc`.
async fn grpcio_servers_registered_as_grpc(backend: Backend) {
    let servers = two_grpcio_servers().await;
    let _leases = register(&backend.registry, &servers, &["grpc"]).await;
    let served = Arc::new(ServedBy::default());
    let client = InteropClient::discover(&backend.registry, INTEROP)
        .no_cache()
        .layer(served.clone())
        .build()
        .await
        .expect("discover");
    assert!(eventually(Duration::from_secs(10), || known(client.channel()) == 2).await, "both discovered");
    echo_all(&client).await;
    assert_balanced(&served);
}

/// How protocol-less entries get into the registry under test.
async fn write_protocol_less(backend: &Backend, servers: &[PythonServer]) -> Vec<Lease> {
    match &backend.peer {
        // By hand, as an operator or a grpc-go service would.
        Peer::Etcd(etcd) => {
            for server in servers {
                let addr = addr_of(server);
                let put = etcd
                    .ctl(&["put", &format!("{INTEROP}/{addr}"), &format!(r#"{{"Addr":"{addr}"}}"#)])
                    .await;
                assert!(put.status.success(), "etcdctl put: {}", String::from_utf8_lossy(&put.stderr));
            }
            Vec::new()
        }
        // Registered with no protocols, as a tool that knows none would.
        Peer::Courier { .. } => register(&backend.registry, servers, &[]).await,
    }
}

/// (c): entries that name no protocol, pointing at grpcio servers: called
/// natively by default (and failing), over gRPC when the consumer says so.
async fn protocol_less_entries_with_grpc_preferred(backend: Backend) {
    let servers = two_grpcio_servers().await;
    let _leases = write_protocol_less(&backend, &servers).await;

    // Without the preference they are taken as courier servers: known,
    // but a grpcio server does not speak courier's protocol.
    let native =
        InteropClient::discover(&backend.registry, INTEROP).no_cache().build().await.expect("discover");
    assert!(eventually(Duration::from_secs(10), || known(native.channel()) == 2).await, "both discovered");
    let err = native
        .echo(EchoRequest { message: "natively".into(), ..Default::default() })
        .await
        .expect_err("a grpcio server called natively");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("no instance of interop.Interop could be reached"), "{err}");

    let served = Arc::new(ServedBy::default());
    let client = InteropClient::discover(&backend.registry, INTEROP)
        .no_cache()
        .prefer_grpc_for_unlabelled(true)
        .layer(served.clone())
        .build()
        .await
        .expect("discover");
    assert!(eventually(Duration::from_secs(10), || known(client.channel()) == 2).await, "both discovered");
    for instance in client.channel().instances().unwrap_or_default() {
        assert!(instance.protocols.is_empty(), "a protocol-less entry: {instance}");
    }
    echo_all(&client).await;
    assert_balanced(&served);
}

/// Moving on from an instance that went away works over gRPC as it does
/// natively: a provider gone without deregistering (still listed, its lease
/// not expired) costs an idempotent method no call, whether its connection
/// is lost mid-call or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_gone_over_grpc_costs_idempotent_calls_nothing() {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    // A long lease: it stays listed throughout, so every call below has it
    // in its order.
    let gone = start_provider(&registry, "gone", |b| {
        b.protocols([Protocol::Grpc]).registration_ttl(Duration::from_secs(60))
    })
    .await;
    let _stays = start_provider(&registry, "stays", |b| b.protocols([Protocol::Grpc])).await;
    let calc =
        CalculatorClient::discover(&registry, "Calculator").no_cache().build().await.expect("discover");
    assert!(eventually(Duration::from_secs(5), || known(calc.channel()) == 2).await, "both discovered");
    // Round robin: both have a live connection when one goes.
    for _ in 0..4 {
        assert_eq!(calc.add(1, 2).await.expect("a call"), 3);
    }

    gone.abort();
    for i in 0..CALLS {
        let quotient =
            calc.div(1.0, 4.0).await.unwrap_or_else(|err| panic!("call {i} after the abort: {err}"));
        assert_eq!(quotient, 0.25);
    }
    assert_eq!(known(calc.channel()), 2, "still listed: its lease has not expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_registry_grpc_only_courier_servers() {
    within(TEST_LIMIT, "the test", async { grpc_only_courier_servers(courier_registry().await).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_grpc_only_courier_servers() {
    within(TEST_LIMIT, "the test", async { grpc_only_courier_servers(etcd_registry().await).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_registry_grpcio_servers_registered_as_grpc() {
    within(TEST_LIMIT, "the test", async {
        grpcio_servers_registered_as_grpc(courier_registry().await).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_grpcio_servers_registered_as_grpc() {
    within(TEST_LIMIT, "the test", async { grpcio_servers_registered_as_grpc(etcd_registry().await).await })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_registry_protocol_less_entries_with_grpc_preferred() {
    let run = async { protocol_less_entries_with_grpc_preferred(courier_registry().await).await };
    within(TEST_LIMIT, "the test", run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_protocol_less_entries_written_by_etcdctl_with_grpc_preferred() {
    let run = async { protocol_less_entries_with_grpc_preferred(etcd_registry().await).await };
    within(TEST_LIMIT, "the test", run).await;
}
